// Argument errors of the TypeScript layer, with Node's codes: a JavaScript value no C caller could
// pass is the caller's bug, thrown as is (never an errno). A leaf module: it imports nothing, so
// every layer may use it.

/** Node's `ERR_INVALID_ARG_TYPE`: a value of the wrong type. */
export function invalidArgType(message: string): TypeError & { code: 'ERR_INVALID_ARG_TYPE' } {
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
