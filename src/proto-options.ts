import type { Options } from '@grpc/proto-loader';

/**
 * proto-loader options used for every .proto we load at run time. scripts/gen-types.sh passes
 * the same flags to proto-loader-gen-types, so the generated types describe these objects:
 * snake_case keys, 64-bit integers as decimal strings (uint64 "unlimited" = 2^64−1 would lose
 * precision as a Number), enums as their names, zero values present.
 */
export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};
