// Request numbers that carry their struct (asm-generic/ioctl.h, at the type level): a request
// constant knows its argument struct, so a wrong request/struct pair does not compile.
import type { IovaRangeArg, StructFieldName, StructIn, StructIovaRangesName, StructLayout, StructOut, StructOutName } from './struct.js';

/** Type-level only: the struct an ioctl request takes (never set at runtime). */
declare const ioctlStruct: unique symbol;
/** Type-level only: the brand of a request whose struct is known at runtime only. */
declare const ioctlAnyStruct: unique symbol;

/**
 * The brand of {@link IoctlRequest}. Invariant in `L` (a function of it in and out, which also
 * holds where the brand is compared property by property, as in `number & brand`): a request
 * never passes for another struct's, nor for one of any struct.
 */
export interface IoctlStructBrand<in out L extends StructLayout> {
  readonly [ioctlStruct]: (layout: L) => L;
}

/**
 * An ioctl request number that takes `struct L` (`IOMMU_IOAS_MAP` is
 * `IoctlRequest<typeof iommu_ioas_map>`): a plain number at runtime, the struct at the type level,
 * so `Process.ioctl` checks an object argument against `L` and types the outputs it returns.
 */
export type IoctlRequest<L extends StructLayout> = number & IoctlStructBrand<L>;

/** The struct a typed request takes. */
export type IoctlStructOf<R> = R extends IoctlRequest<infer L> ? L : never;

/**
 * A request whose struct is only known at runtime (picked by name or number from
 * {@link UAPI_IOCTLS}): `Process.ioctl` takes any object argument for it, checked at runtime
 * only, and returns `Record<string, unknown>`. No typed request is one (they are never
 * assignable to each other): make one with {@link anyIoctlRequest}.
 */
export type AnyIoctlRequest = number & { readonly [ioctlAnyStruct]: true };

/** A request number as an {@link AnyIoctlRequest}: the explicit way out of the typed path. */
export const anyIoctlRequest = (request: number): AnyIoctlRequest => request as AnyIoctlRequest;

/** The fields of an object argument `A` that `struct L` does not have, each typed `never`. */
export type UnknownFields<L extends StructLayout, A> = { [K in Exclude<keyof A, StructFieldName<L>>]: never };

/**
 * What `Process.ioctl(fd, request, arg)` returns for a typed request: `arg` itself, its fields as
 * given (an empty `[]` for an IOVA-range array reads back as ranges) and the struct's outputs
 * present and typed ({@link StructOut}).
 */
export type IoctlResult<L extends StructLayout, A extends StructIn<L>> = Flatten<
  {
    [K in keyof A as K extends StructOutName<L> ? never : K]: K extends StructIovaRangesName<L> ? (A[K] extends readonly never[] ? IovaRangeArg[] : A[K]) : A[K];
  } & StructOut<L>
>;

/** One object type out of an intersection (what an editor shows for a result). */
type Flatten<T> = { [K in keyof T]: T[K] } & {};
