/**
 * The checked-in protos (protos/), loaded once at boot with protobufjs. Check uses protobufjs's
 * generated decoders directly as grpc-js (de)serializers: no proto-loader object conversion on the hot
 * path, and fields Envoy sends that tollgate never reads (the destination peer, TLS, metadata) are skipped unparsed.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import protobuf from 'protobufjs';

/** protos/ at the package root (dist/src/authz → ../../../protos). */
export const PROTO_DIR = fileURLToPath(new URL('../../../protos/', import.meta.url));

export const CHECK_PROTO = 'envoy/service/auth/v3/external_auth.proto';
export const HEALTH_PROTO = 'grpc/health/v1/health.proto';

export interface LoadedProtos {
  readonly root: protobuf.Root;
  readonly CheckRequest: protobuf.Type;
  readonly CheckResponse: protobuf.Type;
  readonly HealthCheckRequest: protobuf.Type;
  readonly HealthCheckResponse: protobuf.Type;
}

/** Loads proto files from `dirs` in order (protobufjs ships google/protobuf/* itself). */
export function loadRoot(files: readonly string[], dirs: readonly string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (target.startsWith('google/protobuf/')) return target;
    for (const dir of dirs) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return path.join(dirs[0] ?? '.', target);
  };
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();
  return root;
}

export function loadProtos(): LoadedProtos {
  const root = loadRoot([CHECK_PROTO, HEALTH_PROTO], [PROTO_DIR]);
  return {
    root,
    CheckRequest: root.lookupType('envoy.service.auth.v3.CheckRequest'),
    CheckResponse: root.lookupType('envoy.service.auth.v3.CheckResponse'),
    HealthCheckRequest: root.lookupType('grpc.health.v1.HealthCheckRequest'),
    HealthCheckResponse: root.lookupType('grpc.health.v1.HealthCheckResponse'),
  };
}
