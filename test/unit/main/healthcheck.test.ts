/**
 * The image's HEALTHCHECK (src/main/healthcheck.ts): it probes what the container's command serves, so a
 * container running `tollgate authz` alone is healthy (the probe it replaced asked port 4000 only).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { healthTargets, probe, tollgateCommandLine } from '../../../src/main/healthcheck.js';
import { startTestAuthz, type TestAuthz } from '../../support/authz.js';

const NODE = ['node', 'bin/tollgate.js'];

describe('healthcheck', () => {
  it('reads the command and its ports from the command line, with the CLI defaults', () => {
    const table: Array<[string[], ReturnType<typeof healthTargets>]> = [
      [[...NODE, 'serve'], { host: '127.0.0.1', httpPort: 4000, grpcPort: 9001 }],
      [[...NODE, 'authz'], { host: '127.0.0.1', httpPort: undefined, grpcPort: 9001 }],
      [[...NODE, 'gateway', '--http-port', '8080'], { host: '127.0.0.1', httpPort: 8080, grpcPort: undefined }],
      [
        [...NODE, 'authz', '--grpc-port=9100', '--config', '/etc/tollgate/config.yaml'],
        { host: '127.0.0.1', httpPort: undefined, grpcPort: 9100 },
      ],
      [[...NODE, 'serve', '--host', '10.1.2.3', '--watch-config'], { host: '10.1.2.3', httpPort: 4000, grpcPort: 9001 }],
      [[...NODE, 'serve', '--host', '::'], { host: '127.0.0.1', httpPort: 4000, grpcPort: 9001 }],
      [
        ['/usr/local/bin/node', '/app/bin/tollgate.js', 'gateway', '--http-port', '0'],
        { host: '127.0.0.1', httpPort: undefined, grpcPort: undefined },
      ],
      [[...NODE, 'config', 'check', 'c.yaml'], undefined],
      [['tini', '--', 'node'], undefined],
    ];
    for (const [argv, expected] of table) assert.deepEqual(healthTargets(argv), expected, argv.join(' '));
  });

  it("finds tollgate's process in /proc: PID 1, else the first other one (behind an init)", () => {
    const proc = mkdtempSync(path.join(tmpdir(), 'tollgate-proc-'));
    try {
      const cmdline = (pid: string, argv: string[]): void => {
        mkdirSync(path.join(proc, pid));
        writeFileSync(path.join(proc, pid, 'cmdline'), `${argv.join('\0')}\0`);
      };
      cmdline('1', ['/sbin/tini', '--', 'node', 'bin/tollgate.js', 'authz']);
      assert.deepEqual(tollgateCommandLine(proc), ['/sbin/tini', '--', 'node', 'bin/tollgate.js', 'authz']);
      rmSync(path.join(proc, '1'), { recursive: true });
      cmdline('1', ['/sbin/docker-init', '--']);
      cmdline('7', [...NODE, 'authz', '--grpc-port', '9100']);
      assert.deepEqual(tollgateCommandLine(proc), [...NODE, 'authz', '--grpc-port', '9100']);
      assert.equal(tollgateCommandLine(path.join(proc, 'missing')), undefined);
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
  });

  describe('probing live servers', () => {
    let authz: TestAuthz;
    let gateway: Server;
    let gatewayPort: number;
    before(async () => {
      authz = await startTestAuthz('model_list: []\n');
      gateway = createServer((req, res) => {
        res.statusCode = req.url === '/health/liveliness' ? 200 : 404;
        res.end("I'm alive!");
      });
      await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
      gatewayPort = (gateway.address() as AddressInfo).port;
    });
    after(async () => {
      await authz.close();
      await new Promise<void>((resolve) => gateway.close(() => resolve()));
    });

    it('passes `tollgate authz` alone on its gRPC health service, where the old probe of port 4000 failed', async () => {
      const alone = healthTargets([...NODE, 'authz', '--grpc-port', String(authz.port)]);
      assert.ok(alone !== undefined);
      // The Dockerfile used to ask every container for the gateway's port, which authz does not serve.
      assert.equal(alone.httpPort, undefined);
      assert.deepEqual(await probe(alone, 2000), []);
    });

    it('passes `tollgate serve` only when both its ports answer, and names the one that does not', async () => {
      assert.deepEqual(await probe({ host: '127.0.0.1', httpPort: gatewayPort, grpcPort: authz.port }, 2000), []);
      // The gRPC probe against an HTTP/1.1 server: no gRPC answer.
      const problems = await probe({ host: '127.0.0.1', httpPort: gatewayPort, grpcPort: gatewayPort }, 2000);
      assert.equal(problems.length, 1);
      assert.match(problems[0] ?? '', new RegExp(`grpc\\.health\\.v1\\.Health/Check on port ${gatewayPort}`));
      const closed = await probe({ host: '127.0.0.1', httpPort: 1 }, 2000);
      assert.match(closed[0] ?? '', /GET \/health\/liveliness on port 1: /);
    });
  });
});
