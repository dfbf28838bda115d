/**
 * Bench child: the baseline, a no-op ext_authz server as users typically write one with grpc-js:
 * @grpc/proto-loader over Envoy's own external_auth.proto with the options grpc's examples use, and a
 * handler that allows everything.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ENVOY_INCLUDE_DIRS } from '../../test/support/envoy.js';
import { failStartup, serveParent } from './ipc.js';

interface AuthorizationPackage {
  envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
}

async function main(): Promise<void> {
  const def = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
    includeDirs: ENVOY_INCLUDE_DIRS,
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as AuthorizationPackage;
  const server = new grpc.Server();
  server.addService(pkg.envoy.service.auth.v3.Authorization.service, {
    Check: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, { status: { code: 0 }, ok_response: {} }),
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  serveParent(port, () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));
}

main().catch(failStartup);
