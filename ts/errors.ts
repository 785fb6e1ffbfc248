// Argument errors of the TypeScript layer, with Node's codes and wording: a JavaScript value no C
// caller could pass is the caller's bug, thrown as is (never an errno). A leaf module: it imports
// nothing, so every layer may use it.

type InvalidArgType = TypeError & { code: 'ERR_INVALID_ARG_TYPE' };

/**
 * Node's `ERR_INVALID_ARG_TYPE`: a value of the wrong type. Given `name`, `expected` and the
 * value, the message is Node's: `The "n" argument must be of type number. Received type string
 * ('x')` (a dotted name is a `property`).
 */
export function invalidArgType(message: string): InvalidArgType;
export function invalidArgType(name: string, expected: string, actual: unknown): InvalidArgType;
export function invalidArgType(name: string, ...rest: [] | [expected: string, actual: unknown]): InvalidArgType {
  const message = rest.length === 0 ? name : `${subject(name)} must be ${rest[0]}. ${received(rest[1])}`;
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' as const });
}

/**
 * Node's `ERR_INVALID_ARG_VALUE`: a value of the right type that is not accepted. A RangeError
 * unless `Class` says otherwise (Node raises this code as either).
 */
export function invalidArgValue<E extends Error = RangeError>(
  message: string,
  Class: new (message: string) => E = RangeError as unknown as new (message: string) => E,
): E & { code: 'ERR_INVALID_ARG_VALUE' } {
  return Object.assign(new Class(message), { code: 'ERR_INVALID_ARG_VALUE' as const });
}

/**
 * Node's `ERR_OUT_OF_RANGE`: a number or bigint outside `range` (`'an integer >= 0 && <= 18'`):
 * `The value of "order" is out of range. It must be an integer >= 0 && <= 18. Received 19`.
 */
export function outOfRange(name: string, range: string, actual: unknown): RangeError & { code: 'ERR_OUT_OF_RANGE' } {
  const shown = typeof actual === 'bigint' ? `${actual}n` : Object.is(actual, -0) ? '-0' : String(actual);
  return Object.assign(new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${shown}`), {
    code: 'ERR_OUT_OF_RANGE' as const,
  });
}

/** `The "n" argument`, or `The "options.size" property` for a dotted or indexed name. */
export function subject(name: string): string {
  return `The "${name}" ${/[.[]/.test(name) ? 'property' : 'argument'}`;
}

/**
 * What was received, in Node's words: `Received type string ('x')`, `Received an instance of
 * Object`, `Received null`. Never throws (Symbols, revoked proxies, throwing getters).
 */
export function received(actual: unknown): string {
  if (actual === null || actual === undefined) return `Received ${actual}`;
  switch (typeof actual) {
    case 'bigint':
      return `Received type bigint (${actual}n)`;
    case 'number':
      return `Received type number (${Object.is(actual, -0) ? '-0' : actual})`;
    case 'string': {
      const s = actual.length > 28 ? `${actual.slice(0, 25)}...` : actual;
      return `Received type string (${s.includes("'") ? JSON.stringify(s) : `'${s}'`})`;
    }
    case 'symbol':
      return `Received type symbol (${String(actual)})`;
    case 'function':
      return `Received function ${actual.name || '<anonymous>'}`;
    case 'object':
      try {
        const name: unknown = (actual as { constructor?: { name?: unknown } }).constructor?.name;
        if (typeof name === 'string' && name) return `Received an instance of ${name}`;
      } catch {
        // A proxy or getter that throws: say what can be said without running it again.
      }
      return 'Received an object';
    default:
      return `Received type ${typeof actual} (${String(actual)})`;
  }
}
