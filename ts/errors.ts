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
