/**
 * charts/tollgate rendered as `helm template` would (test/support/helm.ts), with the default values and with
 * ci/full-values.yaml, and checked as a cluster and tollgate would take it: Kubernetes objects, probes,
 * security contexts, resources, HPA, PDB, NetworkPolicy, ServiceMonitor only on request, secrets only by
 * reference, a tollgate config that `tollgate config check` accepts and an Envoy config Envoy's protos accept.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { loadConfigText } from '../../../src/config/load.js';
import { checkEnvoyBootstrap, unpackAny, type JsonObject } from '../../support/envoy-bootstrap.js';
import {
  assertHeapOverload,
  assertTollgateEnvoyConfig,
  at,
  isObject,
  listener,
  cluster,
  endpoints,
} from '../../support/envoy-expectations.js';
import { CHART_DIR, ValuesSchemaError, readValues, renderChart, type RenderedChart } from '../../support/helm.js';
import type { GoMap } from '../../support/go-template.js';

const ROOT = new URL('../../../../', import.meta.url);
const FULL_VALUES = readValues(new URL('ci/full-values.yaml', CHART_DIR));

interface Port {
  name: string;
  containerPort: number;
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  tcpSocket?: { port: string | number };
  periodSeconds?: number;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  ports?: Port[];
  env?: EnvVar[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  securityContext?: Record<string, unknown>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface PodSpec {
  containers: Container[];
  securityContext: Record<string, unknown>;
  automountServiceAccountToken?: boolean;
  serviceAccountName: string;
  terminationGracePeriodSeconds: number;
  volumes: Array<{
    name: string;
    configMap?: { name: string; items: Array<{ key: string; path: string }> };
    emptyDir?: object;
    persistentVolumeClaim?: { claimName: string };
  }>;
}
interface Deployment {
  metadata: { name: string };
  spec: {
    replicas?: number;
    strategy?: { type: string };
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: PodSpec };
  };
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}

function objects(r: RenderedChart): K8sObject[] {
  return r.documents.map((d) => d.object as unknown as K8sObject);
}

function byKind<T = K8sObject>(r: RenderedChart, kind: string): T[] {
  return objects(r).filter((o) => o.kind === kind) as T[];
}

function one<T = K8sObject>(r: RenderedChart, kind: string, name?: string): T {
  const found = objects(r).filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `one ${kind}${name === undefined ? '' : ` ${name}`}: ${found.map((o) => o.metadata.name).join(', ')}`);
  return found[0] as T;
}

function container(d: Deployment, name: string): Container {
  const c = d.spec.template.spec.containers.find((x) => x.name === name);
  assert.ok(c !== undefined, `container ${name}`);
  return c;
}

/** A container port by name or number, across the pod. */
function podPort(d: Deployment, port: string | number): number {
  if (typeof port === 'number') return port;
  const found = d.spec.template.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === port);
  assert.ok(found !== undefined, `no container port named ${port}`);
  return found.containerPort;
}

function configMapFile(r: RenderedChart, file: string): string {
  const cm = one(r, 'ConfigMap');
  const text = cm.data?.[file];
  assert.ok(typeof text === 'string', `ConfigMap has ${file}`);
  return text;
}

/** The environment the tollgate container gets: literal values, chart-created Secret values, and stand-ins for external Secrets. */
function containerEnv(r: RenderedChart, c: Container): Record<string, string> {
  const secrets = new Map(byKind(r, 'Secret').map((s) => [s.metadata.name, s.data ?? {}]));
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.secretKeyRef;
    if (ref === undefined) continue;
    const data = secrets.get(ref.name);
    if (data !== undefined) {
      const encoded = data[ref.key];
      assert.ok(encoded !== undefined, `Secret ${ref.name} has key ${ref.key} for ${e.name}`);
      env[e.name] = Buffer.from(encoded, 'base64').toString('utf8');
    } else {
      env[e.name] = externalSecretStandIn(e.name);
    }
  }
  return env;
}

/** What an operator's own Secret would hold for a variable the chart reads from it. */
function externalSecretStandIn(name: string): string {
  if (name.includes('DATABASE')) return 'postgres://tollgate:pw@tollgate-db-rw.data.svc:5432/tollgate';
  if (name.includes('REDIS')) return 'redis://valkey.data.svc:6379/0';
  if (name.includes('MASTER_KEY')) return 'sk-stand-in-master-key-0123456789';
  return 'stand-in-value';
}

/** The script of tollgate's preStop hook (`node -e <script>`). */
function drainScript(c: Container): string {
  const cmd = c.lifecycle?.preStop?.exec?.command ?? [];
  assert.deepEqual(cmd.slice(0, 2), ['node', '-e']);
  assert.equal(cmd.length, 3);
  return cmd[2] ?? '';
}

/** Runs `node -e script` as the kubelet runs an exec hook; its exit code and how long it took. */
function runNode(script: string): Promise<{ code: number | null; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, ms: performance.now() - started }));
  });
}

function envRefs(text: string): string[] {
  return [...text.matchAll(/os\.environ\/([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1] ?? '');
}

describe('charts/tollgate', () => {
  let defaults: RenderedChart;
  let full: RenderedChart;
  before(() => {
    defaults = renderChart();
    full = renderChart(FULL_VALUES);
  });

  it('renders only Kubernetes objects: apiVersion, kind, a DNS-label metadata.name, the chart labels, no duplicates', () => {
    for (const r of [defaults, full]) {
      const seen = new Set<string>();
      for (const o of objects(r)) {
        assert.ok(typeof o.apiVersion === 'string' && o.apiVersion !== '', `apiVersion of ${JSON.stringify(o).slice(0, 80)}`);
        assert.ok(typeof o.kind === 'string' && /^[A-Z]/.test(o.kind));
        assert.match(o.metadata.name, /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, `${o.kind} name`);
        assert.equal(o.metadata.labels?.['app.kubernetes.io/managed-by'], 'Helm', `${o.kind} labels`);
        assert.equal(o.metadata.labels['app.kubernetes.io/instance'], 'tollgate');
        const id = `${o.kind}/${o.metadata.name}`;
        assert.ok(!seen.has(id), `duplicate ${id}`);
        seen.add(id);
      }
    }
    const kinds = (r: RenderedChart): string[] =>
      objects(r)
        .map((o) => `${o.apiVersion} ${o.kind}`)
        .sort();
    assert.deepEqual(kinds(defaults), [
      'apps/v1 Deployment',
      'networking.k8s.io/v1 NetworkPolicy',
      'policy/v1 PodDisruptionBudget',
      'v1 ConfigMap',
      'v1 Service',
      'v1 ServiceAccount',
    ]);
    assert.deepEqual(kinds(full), [
      'apps/v1 Deployment',
      'autoscaling/v2 HorizontalPodAutoscaler',
      'monitoring.coreos.com/v1 ServiceMonitor',
      'networking.k8s.io/v1 NetworkPolicy',
      'policy/v1 PodDisruptionBudget',
      'v1 ConfigMap',
      'v1 Secret',
      'v1 Service',
      'v1 Service',
      'v1 ServiceAccount',
    ]);
  });

  it('runs Envoy and `tollgate serve` in one pod, Envoy exposing :10000, tollgate :4000 and :9001', () => {
    for (const r of [defaults, full]) {
      const d = one<Deployment>(r, 'Deployment');
      assert.deepEqual(
        d.spec.template.spec.containers.map((c) => c.name),
        ['envoy', 'tollgate'],
      );
      const envoy = container(d, 'envoy');
      assert.deepEqual(envoy.command, ['envoy']);
      assert.deepEqual(envoy.args?.slice(0, 2), ['--config-path', '/etc/envoy/envoy.yaml']);
      assert.equal(podPort(d, 'http'), 10000);
      const tollgate = container(d, 'tollgate');
      assert.deepEqual(tollgate.args, ['serve', '--config', '/etc/tollgate/config.yaml', '--http-port', '4000', '--grpc-port', '9001']);
      assert.equal(podPort(d, 'gateway'), 4000);
      assert.equal(podPort(d, 'authz'), 9001);
      assert.equal(d.spec.selector.matchLabels['app.kubernetes.io/name'], d.spec.template.metadata.labels['app.kubernetes.io/name']);
    }
    assert.equal(container(one<Deployment>(defaults, 'Deployment'), 'tollgate').image, 'tollgate:0.1.0');
    assert.equal(container(one<Deployment>(full, 'Deployment'), 'tollgate').image, 'registry.example.com/platform/tollgate:0.1.0');
  });

  it('probes: /health/liveliness (startup, liveness) and /health/readiness on :4000; Envoy readiness GET /ready', () => {
    for (const r of [defaults, full]) {
      const d = one<Deployment>(r, 'Deployment');
      const t = container(d, 'tollgate');
      const probe = (p: Probe | undefined): [string | undefined, number] => [p?.httpGet?.path, podPort(d, p?.httpGet?.port ?? -1)];
      assert.deepEqual(probe(t.startupProbe), ['/health/liveliness', 4000]);
      assert.deepEqual(probe(t.livenessProbe), ['/health/liveliness', 4000]);
      assert.deepEqual(probe(t.readinessProbe), ['/health/readiness', 4000]);
      const e = container(d, 'envoy');
      assert.deepEqual(probe(e.readinessProbe), ['/ready', 9902]);
      assert.equal(podPort(d, e.livenessProbe?.tcpSocket?.port ?? -1), 9902);
      // The probe port is Envoy's read-only listener forwarding /ready to the loopback admin API.
      const envoyConfig = checkEnvoyBootstrap(configMapFile(r, 'envoy.yaml')).json;
      assert.ok(envoyConfig !== undefined);
      assert.equal(at(listener(envoyConfig, 9902), 'address', 'socket_address', 'address'), '0.0.0.0');
      assert.deepEqual(endpoints(cluster(envoyConfig, 'envoy_admin')), [{ address: '127.0.0.1', port: 9901 }]);
    }
  });

  it('runs both containers non-root with a read-only root, no capabilities, no privilege escalation, RuntimeDefault seccomp', () => {
    for (const r of [defaults, full]) {
      const pod = one<Deployment>(r, 'Deployment').spec.template.spec;
      assert.equal(pod.securityContext['runAsNonRoot'], true);
      assert.deepEqual(pod.securityContext['seccompProfile'], { type: 'RuntimeDefault' });
      assert.equal(pod.automountServiceAccountToken, false);
      for (const c of pod.containers) {
        const sc = c.securityContext ?? {};
        assert.equal(sc['runAsNonRoot'], true, c.name);
        assert.ok(typeof sc['runAsUser'] === 'number' && sc['runAsUser'] > 0, `${c.name} runAsUser`);
        assert.equal(sc['allowPrivilegeEscalation'], false, c.name);
        assert.equal(sc['readOnlyRootFilesystem'], true, c.name);
        assert.deepEqual(sc['capabilities'], { drop: ['ALL'] }, c.name);
      }
    }
  });

  it('gives tollgate writable emptyDirs for data_dir (embedded PGlite) and /tmp, under a read-only root', () => {
    for (const r of [defaults, full]) {
      const pod = one<Deployment>(r, 'Deployment').spec.template.spec;
      const t = pod.containers.find((c) => c.name === 'tollgate');
      const config = parse(configMapFile(r, 'config.yaml')) as { general_settings?: { data_dir?: string } };
      const dataDir = config.general_settings?.data_dir;
      assert.equal(dataDir, '/var/lib/tollgate');
      for (const dir of [dataDir, '/tmp']) {
        const mount = t?.volumeMounts?.find((m) => m.mountPath === dir);
        assert.ok(mount !== undefined && mount.readOnly !== true, `${dir} mounted writable`);
        assert.ok(pod.volumes.find((v) => v.name === mount.name)?.emptyDir !== undefined, `${dir} is an emptyDir`);
      }
    }
  });

  it('keeps embedded PGlite on a PersistentVolumeClaim when asked, rolled out by Recreate (never two PGlites on it)', () => {
    const pvc = (r: RenderedChart): K8sObject[] => byKind(r, 'PersistentVolumeClaim');
    const data = (r: RenderedChart): PodSpec['volumes'][number] | undefined =>
      one<Deployment>(r, 'Deployment').spec.template.spec.volumes.find((v) => v.name === 'data');
    assert.deepEqual(pvc(defaults), []);
    assert.deepEqual(data(defaults)?.emptyDir, { sizeLimit: '4Gi' });
    assert.equal(one<Deployment>(defaults, 'Deployment').spec.strategy, undefined);

    const persistent = renderChart({ dataDir: { persistence: { enabled: true, storageClassName: 'fast', size: '20Gi' } } });
    const claim = one(persistent, 'PersistentVolumeClaim');
    assert.equal(claim.metadata.name, 'tollgate-data');
    assert.deepEqual(claim.spec, {
      accessModes: ['ReadWriteOnce'],
      storageClassName: 'fast',
      resources: { requests: { storage: '20Gi' } },
    });
    assert.deepEqual(data(persistent), { name: 'data', persistentVolumeClaim: { claimName: 'tollgate-data' } });
    assert.deepEqual(one<Deployment>(persistent, 'Deployment').spec.strategy, { type: 'Recreate' });
    assert.match(persistent.notes, /kept by embedded PGlite under\n\/var\/lib\/tollgate, on the PersistentVolumeClaim tollgate-data/);
    assert.doesNotMatch(persistent.notes, /LOST/);

    const existing = renderChart({ dataDir: { persistence: { enabled: true, existingClaim: 'tollgate-records' } } });
    assert.deepEqual(pvc(existing), []);
    assert.deepEqual(data(existing), { name: 'data', persistentVolumeClaim: { claimName: 'tollgate-records' } });
  });

  it('sets requests and limits on every container (the HPA needs CPU requests on both)', () => {
    for (const r of [defaults, full]) {
      for (const c of one<Deployment>(r, 'Deployment').spec.template.spec.containers) {
        assert.ok(c.resources?.requests?.['cpu'] !== undefined, `${c.name} cpu request`);
        assert.ok(c.resources.requests['memory'] !== undefined, `${c.name} memory request`);
        assert.ok(c.resources.limits?.['memory'] !== undefined, `${c.name} memory limit`);
      }
    }
  });

  it('drains in order: Envoy drains its clients, tollgate serves on, then drains; Envoy outlives it; the grace period both', () => {
    for (const [r, expected] of [
      [defaults, { serve: 5, drain: 30, envoy: 40, grace: 60 }],
      [full, { serve: 10, drain: 60, envoy: 75, grace: 90 }],
    ] as const) {
      const d = one<Deployment>(r, 'Deployment');
      const tollgate = container(d, 'tollgate');
      const envoy = container(d, 'envoy');
      // tollgate's preStop: Envoy's admin API (the Envoy image has no curl; this one has node), then the sleep.
      const script = drainScript(tollgate);
      assert.match(script, /fetch\('http:\/\/127\.0\.0\.1:9901\/drain_listeners\?graceful&skip_exit', \{ method: 'POST'/);
      assert.match(script, new RegExp(`setTimeout\\(\\(\\) => process\\.exit\\(0\\), ${expected.serve} \\* 1000\\)`));
      // Envoy drains every connection at once, over the time tollgate keeps serving, and keeps its listeners.
      const args = envoy.args ?? [];
      assert.equal(args[args.indexOf('--drain-strategy') + 1], 'immediate');
      assert.equal(args[args.indexOf('--drain-time-s') + 1], String(expected.serve));
      // SIGTERM: tollgate drains for drainSeconds.
      assert.equal(tollgate.env?.find((e) => e.name === 'TOLLGATE_DRAIN_SECONDS')?.value, String(expected.drain));
      // Envoy exits at once on SIGTERM: its sleep covers tollgate's preStop and drain, and the grace period covers it.
      assert.deepEqual(envoy.lifecycle?.preStop?.exec?.command, ['sleep', String(expected.envoy)]);
      assert.equal(d.spec.template.spec.terminationGracePeriodSeconds, expected.grace);
      assert.ok(expected.envoy >= expected.serve + expected.drain + 5);
      assert.ok(expected.grace >= expected.envoy + 5 && expected.grace >= expected.serve + expected.drain + 10);
    }
  });

  it("tollgate's preStop asks Envoy to drain, then sleeps, and ends even when Envoy does not answer", async () => {
    const d = one<Deployment>(renderChart({ preStopSleepSeconds: 1 }), 'Deployment');
    const script = drainScript(container(d, 'tollgate'));
    const calls: string[] = [];
    const admin = createServer((req, res) => {
      calls.push(`${req.method ?? ''} ${req.url ?? ''}`);
      res.end('OK\n');
    });
    await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', resolve));
    const port = (admin.address() as AddressInfo).port;
    try {
      const answered = await runNode(script.replace('127.0.0.1:9901', `127.0.0.1:${port}`));
      assert.equal(answered.code, 0);
      assert.ok(answered.ms >= 1000, `slept ${answered.ms} ms`);
      assert.deepEqual(calls, ['POST /drain_listeners?graceful&skip_exit']);
    } finally {
      admin.close();
    }
    // Nothing listening: the call fails, the sleep still happens, the hook still ends.
    const refused = await runNode(script.replace('127.0.0.1:9901', `127.0.0.1:${port}`));
    assert.equal(refused.code, 0);
    assert.ok(refused.ms >= 1000 && refused.ms < 10_000, `took ${refused.ms} ms`);
  });

  it('takes secrets only through secretKeyRef: none inlined in the ConfigMap or the Deployment', () => {
    const values = (FULL_VALUES['secret'] as { values: Record<string, string> }).values;
    for (const r of [defaults, full]) {
      const d = one<Deployment>(r, 'Deployment');
      const cmText = JSON.stringify(one(r, 'ConfigMap'));
      const deploymentText = JSON.stringify(d);
      for (const secret of Object.values(values)) {
        assert.ok(!cmText.includes(secret), 'a secret in the ConfigMap');
        assert.ok(!deploymentText.includes(secret), 'a secret in the Deployment');
      }
      const env = container(d, 'tollgate').env ?? [];
      const config = configMapFile(r, 'config.yaml');
      for (const name of envRefs(config)) {
        const e = env.find((x) => x.name === name);
        assert.ok(e?.valueFrom?.secretKeyRef !== undefined, `${name} comes from a Secret`);
        assert.equal(e.value, undefined);
      }
    }
    // The chart's own Secret (secret.create) holds the values base64-encoded; an external one is referenced by name.
    const secret = one(full, 'Secret');
    assert.deepEqual(
      Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')])),
      values,
    );
    const db = container(one<Deployment>(full, 'Deployment'), 'tollgate').env?.find((e) => e.name === 'DATABASE_URL');
    assert.deepEqual(db?.valueFrom?.secretKeyRef, { name: 'tollgate-db-app', key: 'uri' });
    assert.deepEqual(
      container(one<Deployment>(defaults, 'Deployment'), 'tollgate').env?.find((e) => e.name === 'TOLLGATE_MASTER_KEY')?.valueFrom,
      {
        secretKeyRef: { name: 'tollgate', key: 'TOLLGATE_MASTER_KEY' },
      },
    );
  });

  it('rolls the pods when the config or the chart-made Secret changes (checksum annotations)', () => {
    const annotations = (r: RenderedChart): Record<string, string> => one<Deployment>(r, 'Deployment').spec.template.metadata.annotations;
    assert.match(annotations(defaults)['checksum/config'] ?? '', /^[0-9a-f]{64}$/);
    assert.equal(annotations(defaults)['checksum/secret'], undefined);
    const changedConfig = renderChart({ config: { general_settings: { default_max_tokens: 1024 } } });
    assert.notEqual(annotations(changedConfig)['checksum/config'], annotations(defaults)['checksum/config']);
    const secret = FULL_VALUES['secret'] as GoMap;
    const changedSecret = renderChart({
      ...FULL_VALUES,
      secret: { ...secret, values: { ...(secret['values'] as GoMap), VLLM_API_KEY: 'rotated' } },
    });
    assert.match(annotations(full)['checksum/secret'] ?? '', /^[0-9a-f]{64}$/);
    assert.notEqual(annotations(changedSecret)['checksum/secret'], annotations(full)['checksum/secret']);
    assert.equal(annotations(changedSecret)['checksum/config'], annotations(full)['checksum/config']);
  });

  it('holds a tollgate config that tollgate loads, with every os.environ/ reference set', () => {
    for (const r of [defaults, full]) {
      const text = configMapFile(r, 'config.yaml');
      const env = containerEnv(r, container(one<Deployment>(r, 'Deployment'), 'tollgate'));
      for (const name of envRefs(text)) assert.ok(env[name] !== undefined, `${name} is set in the container`);
      const loaded = loadConfigText(text, env);
      assert.deepEqual(loaded.issues, []);
      assert.deepEqual(loaded.warnings, []);
      assert.ok(loaded.config !== undefined);
    }
  });

  describe('`tollgate config check` on the rendered config', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'tollgate-chart-'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('accepts the full values config and reports what it holds', () => {
      const file = path.join(dir, 'config.yaml');
      writeFileSync(file, configMapFile(full, 'config.yaml'));
      const env = containerEnv(full, container(one<Deployment>(full, 'Deployment'), 'tollgate'));
      const out = execFileSync(process.execPath, [new URL('bin/tollgate.js', ROOT).pathname, 'config', 'check', file], {
        env: { PATH: process.env['PATH'] ?? '', ...env },
        encoding: 'utf8',
      });
      assert.equal(out.trim(), `${file}: ok (2 deployments, 1 keys, 1 teams, 1 policy rules)`);
    });
  });

  it('renders envoy/envoy.yaml itself for the default values, and a valid Envoy bootstrap for any values', () => {
    const rendered = configMapFile(defaults, 'envoy.yaml');
    assert.deepEqual(
      parse(rendered),
      parse(readFileSync(new URL('envoy/envoy.yaml', ROOT), 'utf8')),
      'envoy/envoy.yaml and the chart drifted apart',
    );
    for (const [r, mb] of [
      [defaults, 4],
      [full, 8],
    ] as const) {
      const check = checkEnvoyBootstrap(configMapFile(r, 'envoy.yaml'));
      assert.deepEqual(check.issues, []);
      assert.ok(check.json !== undefined);
      // Envoy buffers what tollgate accepts (general_settings.max_request_size_mb), no less.
      assertTollgateEnvoyConfig(check.json, { maxRequestBytes: mb * 1024 * 1024, upstreamHost: '127.0.0.1' });
    }
    const fullEnvoy = checkEnvoyBootstrap(configMapFile(full, 'envoy.yaml')).json;
    assert.ok(fullEnvoy !== undefined);
    const ingress = listener(fullEnvoy, 10000);
    const hcm = at(ingress, 'filter_chains', 0, 'filters', 0, 'typed_config');
    assert.equal(at(hcm, 'http_filters', 1, 'typed_config', 'grpc_service', 'timeout'), '1.5s');
    assert.equal(at(hcm, 'route_config', 'virtual_hosts', 0, 'routes', 0, 'route', 'idle_timeout'), '2580s');
    assert.equal(at(hcm, 'stream_idle_timeout'), '2580s');
    assert.equal(at(hcm, 'xff_num_trusted_hops'), 1);
  });

  it("sizes Envoy's heap cap from its memory limit (80% by default), or takes it as given", () => {
    const heap = (r: RenderedChart): number => {
      const check = checkEnvoyBootstrap(configMapFile(r, 'envoy.yaml'));
      assert.deepEqual(check.issues, []);
      assert.ok(check.json !== undefined);
      return assertHeapOverload(check.json);
    };
    assert.equal(heap(defaults), Math.floor(0.8 * 256 * 1024 * 1024));
    assert.equal(heap(full), Math.floor(0.75 * 512 * 1024 * 1024));
    const limit = (memory: string | number, overload: GoMap = {}): number =>
      heap(renderChart({ envoy: { resources: { limits: { memory } }, overload } }));
    assert.equal(limit('1Gi'), Math.floor(0.8 * 1024 ** 3));
    assert.equal(limit('1G'), 800_000_000);
    assert.equal(limit('1.5Gi', { heapPercentOfMemoryLimit: 50 }), Math.floor(0.75 * 1024 ** 3));
    assert.equal(limit(536870912), Math.floor(0.8 * 512 * 1024 * 1024));
    assert.equal(limit('512Mi', { maxHeapSizeBytes: 300000000 }), 300000000);
    assert.throws(() => renderChart({ envoy: { resources: { limits: { memory: null } } } }), /envoy\.resources\.limits\.memory is needed/);
    assert.equal(
      heap(renderChart({ envoy: { resources: { limits: { memory: null } }, overload: { maxHeapSizeBytes: 200000000 } } })),
      200000000,
    );
    assert.throws(
      () => renderChart({ envoy: { resources: { limits: { memory: '256MB' } } } }),
      /envoy\.resources\.limits\.memory 256MB: write bytes or a quantity/,
    );
  });

  it('exposes only Envoy through the Service', () => {
    for (const r of [defaults, full]) {
      const d = one<Deployment>(r, 'Deployment');
      const svc = one(r, 'Service', 'tollgate');
      const spec = svc.spec as { selector: Record<string, string>; ports: Array<{ port: number; targetPort: string }> };
      assert.deepEqual(spec.selector, d.spec.selector.matchLabels);
      assert.deepEqual(
        spec.ports.map((p) => podPort(d, p.targetPort)),
        [10000],
      );
    }
    assert.equal((one(full, 'Service', 'tollgate').spec as { ports: Array<{ port: number }> }).ports[0]?.port, 8080);
  });

  it('keeps the client address where asked: externalTrafficPolicy on NodePort and LoadBalancer Services, xff_num_trusted_hops in Envoy', () => {
    const spec = (r: RenderedChart): Record<string, unknown> => one(r, 'Service', 'tollgate').spec ?? {};
    // ClusterIP (the default): the field is not Kubernetes' to take there.
    assert.equal(spec(defaults)['externalTrafficPolicy'], undefined);
    assert.equal(spec(renderChart({ service: { type: 'LoadBalancer' } }))['externalTrafficPolicy'], 'Cluster');
    assert.equal(
      spec(renderChart({ service: { type: 'LoadBalancer', externalTrafficPolicy: 'Local' } }))['externalTrafficPolicy'],
      'Local',
    );
    assert.equal(spec(renderChart({ service: { type: 'NodePort', externalTrafficPolicy: 'Local' } }))['externalTrafficPolicy'], 'Local');
    assert.throws(
      () => renderChart({ service: { externalTrafficPolicy: 'Local' } }),
      /service\.externalTrafficPolicy Local applies to a NodePort or LoadBalancer Service only/,
    );
    const hops = (r: RenderedChart): unknown => {
      const envoy = checkEnvoyBootstrap(configMapFile(r, 'envoy.yaml')).json;
      assert.ok(envoy !== undefined);
      return at(listener(envoy, 10000), 'filter_chains', 0, 'filters', 0, 'typed_config', 'xff_num_trusted_hops');
    };
    assert.equal(hops(defaults), 0);
    assert.equal(hops(renderChart({ envoy: { xffNumTrustedHops: 2 } })), 2);
  });

  it('starts Envoy with --concurrency (2 by default), not one worker per hardware thread of the node', () => {
    const args = (r: RenderedChart): string[] => container(one<Deployment>(r, 'Deployment'), 'envoy').args ?? [];
    for (const [r, workers] of [
      [defaults, '2'],
      [full, '4'],
      [renderChart({ envoy: { concurrency: 1 } }), '1'],
    ] as const) {
      const a = args(r);
      assert.equal(a[a.indexOf('--concurrency') + 1], workers);
    }
  });

  it("serves TLS on Envoy's client port from a kubernetes.io/tls Secret only when asked, TLS 1.2 at least", () => {
    const envoyJson = (r: RenderedChart): JsonObject => {
      const check = checkEnvoyBootstrap(configMapFile(r, 'envoy.yaml'));
      assert.deepEqual(check.issues, []);
      assert.ok(check.json !== undefined && check.message !== undefined, 'decodes into envoy.config.bootstrap.v3.Bootstrap');
      return check.json;
    };
    const d = (r: RenderedChart): Deployment => one<Deployment>(r, 'Deployment');
    const chain = (r: RenderedChart, port: number): JsonObject => {
      const c = at(listener(envoyJson(r), port), 'filter_chains', 0);
      assert.ok(isObject(c));
      return c;
    };
    // Off by default: a plaintext listener, no Secret mounted.
    assert.equal(chain(defaults, 10000)['transport_socket'], undefined);
    assert.equal(
      d(defaults).spec.template.spec.volumes.find((v) => v.name === 'envoy-tls'),
      undefined,
    );

    const tls = renderChart({ envoy: { tls: { secretName: 'tollgate-tls' } } });
    const client = chain(tls, 10000);
    assert.equal(at(client, 'transport_socket', 'name'), 'envoy.transport_sockets.tls');
    const context = at(client, 'transport_socket', 'typed_config');
    assert.ok(isObject(context));
    assert.equal(context['@type'], 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext');
    assert.equal(at(context, 'common_tls_context', 'tls_params', 'tls_minimum_protocol_version'), 'TLSv1_2');
    assert.deepEqual(at(context, 'common_tls_context', 'alpn_protocols'), ['h2', 'http/1.1']);
    const files = at(context, 'common_tls_context', 'tls_certificates', 0);
    assert.deepEqual(
      [at(files, 'certificate_chain', 'filename'), at(files, 'private_key', 'filename')],
      ['/etc/envoy-tls/tls.crt', '/etc/envoy-tls/tls.key'],
    );
    // The same listener, as Envoy decodes it: the transport socket's Any unpacks into a DownstreamTlsContext.
    const message = checkEnvoyBootstrap(configMapFile(tls, 'envoy.yaml')).message;
    assert.ok(message !== undefined);
    const plain = message.$type.toObject(message, { enums: String }) as {
      static_resources: { listeners: Array<{ filter_chains: Array<{ transport_socket?: { typed_config: unknown } }> }> };
    };
    const socketAny = plain.static_resources.listeners[0]?.filter_chains[0]?.transport_socket?.typed_config;
    assert.ok(socketAny !== undefined);
    const downstream = unpackAny(socketAny);
    assert.equal(downstream.typeName, 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext');
    const decoded = downstream.message.$type.toObject(downstream.message, { enums: String }) as {
      common_tls_context: {
        tls_params: { tls_minimum_protocol_version: string };
        tls_certificates: Array<{ certificate_chain: { filename: string } }>;
      };
    };
    assert.equal(decoded.common_tls_context.tls_params.tls_minimum_protocol_version, 'TLSv1_2');
    assert.equal(decoded.common_tls_context.tls_certificates[0]?.certificate_chain.filename, '/etc/envoy-tls/tls.crt');
    // The files are the Secret's, mounted read-only where the listener reads them; the stats listener stays plaintext.
    const pod = d(tls).spec.template.spec;
    const volume = pod.volumes.find((v) => v.name === 'envoy-tls') as {
      secret?: { secretName: string; items: Array<{ key: string; path: string }> };
    };
    assert.deepEqual(volume.secret, {
      secretName: 'tollgate-tls',
      items: [
        { key: 'tls.crt', path: 'tls.crt' },
        { key: 'tls.key', path: 'tls.key' },
      ],
    });
    assert.deepEqual(
      container(d(tls), 'envoy').volumeMounts?.find((m) => m.name === 'envoy-tls'),
      { name: 'envoy-tls', mountPath: '/etc/envoy-tls', readOnly: true },
    );
    assert.equal(chain(tls, 9902)['transport_socket'], undefined);
    assertTollgateEnvoyConfig(envoyJson(tls), { maxRequestBytes: 4 * 1024 * 1024, upstreamHost: '127.0.0.1' });
  });

  it('scales with an autoscaling/v2 HPA on CPU and memory only when asked, leaving replicas to it', () => {
    assert.equal(byKind(defaults, 'HorizontalPodAutoscaler').length, 0);
    assert.equal(one<Deployment>(defaults, 'Deployment').spec.replicas, 1);
    const hpa = one(full, 'HorizontalPodAutoscaler').spec as {
      scaleTargetRef: { apiVersion: string; kind: string; name: string };
      minReplicas: number;
      maxReplicas: number;
      metrics: Array<{ resource: { name: string; target: { type: string; averageUtilization: number } } }>;
      behavior: object;
    };
    assert.deepEqual(hpa.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'tollgate' });
    assert.deepEqual([hpa.minReplicas, hpa.maxReplicas], [3, 12]);
    assert.deepEqual(
      hpa.metrics.map((m) => [m.resource.name, m.resource.target.type, m.resource.target.averageUtilization]),
      [
        ['cpu', 'Utilization', 60],
        ['memory', 'Utilization', 80],
      ],
    );
    assert.deepEqual(hpa.behavior, { scaleDown: { stabilizationWindowSeconds: 300 } });
    assert.equal(one<Deployment>(full, 'Deployment').spec.replicas, undefined, 'the HPA owns replicas');
  });

  it('keeps a PodDisruptionBudget over the same pods (maxUnavailable 1 by default, minAvailable when set)', () => {
    for (const [r, expected] of [
      [defaults, { maxUnavailable: 1, unhealthyPodEvictionPolicy: 'AlwaysAllow' }],
      [full, { minAvailable: 2, unhealthyPodEvictionPolicy: 'AlwaysAllow' }],
    ] as const) {
      const pdb = one(r, 'PodDisruptionBudget').spec as Record<string, unknown> & { selector: { matchLabels: Record<string, string> } };
      const { selector, ...budget } = pdb;
      assert.deepEqual(budget, expected);
      assert.deepEqual(selector.matchLabels, one<Deployment>(r, 'Deployment').spec.selector.matchLabels);
    }
  });

  it('admits clients only to Envoy and Prometheus only to the metrics ports; the authz port is never open', () => {
    type Rule = { ports: Array<{ port: string; protocol: string }>; from?: object[] };
    for (const r of [defaults, full]) {
      const d = one<Deployment>(r, 'Deployment');
      const np = one(r, 'NetworkPolicy').spec as {
        podSelector: { matchLabels: Record<string, string> };
        policyTypes: string[];
        ingress: Rule[];
      };
      assert.deepEqual(np.podSelector.matchLabels, d.spec.selector.matchLabels);
      assert.deepEqual(np.policyTypes, ['Ingress']);
      const [clients, metrics] = np.ingress;
      assert.equal(np.ingress.length, 2);
      assert.deepEqual(
        clients?.ports.map((p) => podPort(d, p.port)),
        [10000],
      );
      assert.deepEqual(
        metrics?.ports.map((p) => podPort(d, p.port)),
        [4000, 9902],
      );
      assert.ok((metrics.from?.length ?? 0) > 0, 'metrics from a selected source only');
      const open = np.ingress.flatMap((rule) => rule.ports.map((p) => podPort(d, p.port)));
      assert.ok(!open.includes(9001), 'ext_authz stays in the pod');
    }
    const defaultsRules = (one(defaults, 'NetworkPolicy').spec as { ingress: Rule[] }).ingress;
    assert.equal(defaultsRules[0]?.from, undefined, 'clients from anywhere by default');
    assert.deepEqual(defaultsRules[1]?.from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }]);
    assert.equal((one(full, 'NetworkPolicy').spec as { ingress: Rule[] }).ingress[0]?.from?.length, 2);
  });

  it('adds a ServiceMonitor (and its headless metrics Service) only when enabled', () => {
    assert.equal(byKind(defaults, 'ServiceMonitor').length, 0);
    assert.equal(byKind(defaults, 'Service').length, 1);
    const sm = one(full, 'ServiceMonitor');
    assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(sm.metadata.labels?.['release'], 'kube-prometheus-stack');
    const spec = sm.spec as {
      selector: { matchLabels: Record<string, string> };
      endpoints: Array<{ port: string; path: string; interval: string }>;
    };
    const svc = one(full, 'Service', 'tollgate-metrics');
    for (const [k, v] of Object.entries(spec.selector.matchLabels)) assert.equal(svc.metadata.labels?.[k], v, `metrics Service label ${k}`);
    assert.ok(
      one(full, 'Service', 'tollgate').metadata.labels?.['app.kubernetes.io/component'] !== 'metrics',
      'selects the metrics Service only',
    );
    const ports = (svc.spec as { clusterIP: string; ports: Array<{ name: string; targetPort: string }> }).ports;
    const d = one<Deployment>(full, 'Deployment');
    assert.deepEqual(
      spec.endpoints.map((e) => [e.path, podPort(d, ports.find((p) => p.name === e.port)?.targetPort ?? -1), e.interval]),
      [
        ['/metrics', 4000, '15s'],
        ['/stats/prometheus', 9902, '15s'],
      ],
    );
    assert.equal((svc.spec as { clusterIP: string }).clusterIP, 'None');
  });

  it('names objects after the release, or the release alone when it holds the chart name', () => {
    const name = (release: string, override: GoMap = {}): string =>
      one<Deployment>(renderChart(override, { name: release, namespace: 'x' }), 'Deployment').metadata.name;
    assert.equal(name('gw'), 'gw-tollgate');
    assert.equal(name('tollgate-prod'), 'tollgate-prod');
    assert.equal(name('gw', { fullnameOverride: 'llm-gateway' }), 'llm-gateway');
    assert.match(defaults.notes, /kubectl -n llm create secret generic tollgate/);
  });

  it('warns loudly in NOTES.txt when records would live in PGlite on the pod (no database_url, no DATABASE_URL)', () => {
    assert.match(defaults.notes, /WARNING: NO DATABASE/);
    assert.match(defaults.notes, /under \/var\/lib\/tollgate \(the pod's emptyDir\) and are LOST with the pod/);
    assert.doesNotMatch(full.notes, /WARNING/);
    // DATABASE_URL from a Secret counts as a database: tollgate reads it from the environment.
    const fromEnv = renderChart({ secretEnv: [{ name: 'TOLLGATE_MASTER_KEY' }, { name: 'DATABASE_URL', secretName: 'db', key: 'uri' }] });
    assert.doesNotMatch(fromEnv.notes, /WARNING/);
    const inMemory = renderChart({ config: { general_settings: { data_dir: null } } });
    assert.match(inMemory.notes, /kept by embedded PGlite\nin memory and are LOST with the pod/);
  });

  it('renders every startup probe setting the schema allows, timeoutSeconds included', () => {
    const startup = (r: RenderedChart): Record<string, unknown> =>
      container(one<Deployment>(r, 'Deployment'), 'tollgate').startupProbe as unknown as Record<string, unknown>;
    assert.deepEqual(
      [startup(defaults)['periodSeconds'], startup(defaults)['timeoutSeconds'], startup(defaults)['failureThreshold']],
      [2, 3, 60],
    );
    assert.equal(startup(renderChart({ probes: { startup: { timeoutSeconds: 7 } } }))['timeoutSeconds'], 7);
  });

  describe('refuses values that would deploy something broken', () => {
    const refused = (override: GoMap, message: RegExp): void => {
      assert.throws(() => renderChart(override), message);
    };

    it('several replicas without PostgreSQL and Redis', () => {
      refused({ replicaCount: 2 }, /share keys, budgets and rate limits only through PostgreSQL and Redis/);
      refused({ autoscaling: { enabled: true } }, /set config\.general_settings\.database_url and redis_url/);
      // DATABASE_URL and REDIS_URL from Secrets are enough: tollgate honours them when the config sets no URL.
      const fromEnv = (names: string[]): GoMap => ({
        replicaCount: 2,
        secretEnv: ['TOLLGATE_MASTER_KEY', ...names].map((name) => ({ name })),
      });
      const config = { general_settings: { database_url: 'os.environ/DATABASE_URL' } };
      refused({ ...fromEnv(['DATABASE_URL']), config }, /database_url and redis_url/);
      const shared = { general_settings: { master_key: null, database_url: 'os.environ/DATABASE_URL', redis_url: 'os.environ/REDIS_URL' } };
      refused({ ...fromEnv(['DATABASE_URL', 'REDIS_URL']), config: shared }, /several replicas need one shared secret/);
      refused(fromEnv(['DATABASE_URL']), /or provide DATABASE_URL and REDIS_URL through secretEnv/);
      refused(fromEnv(['REDIS_URL']), /or provide DATABASE_URL and REDIS_URL through secretEnv/);
      const env = renderChart(fromEnv(['DATABASE_URL', 'REDIS_URL']));
      assert.equal(one<Deployment>(env, 'Deployment').spec.replicas, 2);
      const mixed = renderChart({ ...fromEnv(['DATABASE_URL', 'REDIS_URL']), config });
      assert.equal(one<Deployment>(mixed, 'Deployment').spec.replicas, 2);
      // A LiteLLM config's router Redis is tollgate's Redis too.
      for (const [router, name] of [
        [{ redis_host: 'valkey', redis_password: 'os.environ/REDIS_PASSWORD' }, 'REDIS_PASSWORD'],
        [{ redis_url: 'os.environ/ROUTER_REDIS_URL' }, 'ROUTER_REDIS_URL'],
      ] as const) {
        const litellm = renderChart({ ...fromEnv(['DATABASE_URL', name]), config: { router_settings: router } });
        assert.equal(one<Deployment>(litellm, 'Deployment').spec.replicas, 2, JSON.stringify(router));
      }
      // Plain extraEnv URLs (their passwords in the Deployment) are refused, not taken for a database and a Redis.
      const plain = { ...fromEnv([]), extraEnv: [{ name: 'DATABASE_URL', value: 'postgres://tollgate:pw@db:5432/tollgate' }] };
      refused(plain, /extraEnv DATABASE_URL is a secret tollgate reads, and a plain value is written into the Deployment/);
      const fromSecrets = {
        ...fromEnv([]),
        extraEnv: ['DATABASE_URL', 'REDIS_URL'].map((name) => ({ name, valueFrom: { secretKeyRef: { name: 'stores', key: name } } })),
      };
      assert.equal(one<Deployment>(renderChart(fromSecrets), 'Deployment').spec.replicas, 2);
    });

    it('a secret the ConfigMap would hold: environment_variables, a literal in a secret field or under one, a URL with a password', () => {
      // LiteLLM sets environment_variables in the process: here they would be the ConfigMap's text.
      refused(
        {
          config: {
            general_settings: { master_key: 'os.environ/TOLLGATE_MASTER_KEY' },
            environment_variables: { TOLLGATE_MASTER_KEY: 'sk-master-in-configmap-0123456789' },
          },
        },
        /config\.environment_variables would put its values in the ConfigMap and Helm's release history: provide each variable through secretEnv/,
      );
      // LiteLLM-only keys tollgate ignores are free-form: a credential's name inside them still marks a secret.
      const cache = (params: GoMap): GoMap => ({
        config: { litellm_settings: { cache_params: { type: 'redis', host: 'valkey', ...params } } },
      });
      refused(
        cache({ password: 'hunter2' }),
        /config\.litellm_settings\.cache_params\.password holds a secret in clear text, which would land in the ConfigMap and Helm's release history: write os\.environ\/NAME and provide NAME through secretEnv/,
      );
      for (const name of [
        'redis_password',
        's3_aws_secret_access_key',
        'aws_session_token',
        'langfuse_secret',
        'api_key',
        'master_key',
        'license',
      ])
        refused(cache({ [name]: 'literal' }), new RegExp(`cache_params\\.${name} holds a secret in clear text`));
      refused(cache({ redis_password: 12345 }), /cache_params\.redis_password holds a secret in clear text/);
      // Everything under a credential's name is the credential.
      refused(
        cache({ vertex_credentials: { private_key: 'x' } }),
        /cache_params\.vertex_credentials\.private_key holds a secret in clear text/,
      );
      refused(cache({ url: 'redis://:pw@valkey:6379/0' }), /config\.litellm_settings\.cache_params\.url is a URL with a password/);
      const model = { model_name: 'm', litellm_params: { model: 'openai/m', api_base: 'http://tollgate:pw@vllm:8000/v1' } };
      refused({ config: { model_list: [model] } }, /config\.model_list\[0\]\.litellm_params\.api_base is a URL with a password/);
      // As references to a Secret they render, and the ConfigMap holds only the references.
      const ok = renderChart({
        ...cache({ password: 'os.environ/CACHE_PASSWORD', url: 'redis://valkey:6379/0' }),
        secretEnv: [{ name: 'TOLLGATE_MASTER_KEY' }, { name: 'CACHE_PASSWORD' }],
      });
      assert.match(configMapFile(ok, 'config.yaml'), /password: os\.environ\/CACHE_PASSWORD/);
    });

    it('an os.environ/NAME the tollgate container does not get, or a secret one set as a plain extraEnv value', () => {
      refused(
        {
          replicaCount: 2,
          config: { general_settings: { database_url: 'os.environ/DATABASE_URL', redis_url: 'os.environ/REDIS_URL' } },
          secretEnv: [{ name: 'TOLLGATE_MASTER_KEY' }, { name: 'REDIS_URL' }],
        },
        /config\.general_settings\.database_url is os\.environ\/DATABASE_URL, but the tollgate container gets no DATABASE_URL and tollgate would not start: list it under secretEnv \(from a Secret\)$/,
      );
      const failureMode = { config: { general_settings: { failure_mode: 'os.environ/FAILURE_MODE' } } };
      refused(
        failureMode,
        /failure_mode is os\.environ\/FAILURE_MODE, but .* secretEnv \(from a Secret\), or under extraEnv when it is not secret/,
      );
      assert.doesNotThrow(() => renderChart({ ...failureMode, extraEnv: [{ name: 'FAILURE_MODE', value: 'closed' }] }));
      const model = {
        model_name: 'm',
        litellm_params: { model: 'openai/m', api_base: 'http://vllm:8000/v1', api_key: 'os.environ/VLLM_KEY' },
      };
      refused(
        { config: { model_list: [model] }, extraEnv: [{ name: 'VLLM_KEY', value: 'vllm-secret' }] },
        /config\.model_list\[0\]\.litellm_params\.api_key holds a secret, but extraEnv sets VLLM_KEY as a plain value/,
      );
      // A key declared in the config from the environment is an sk- key in clear.
      refused(
        { config: { keys: [{ key: 'os.environ/CI_BOT_KEY' }] }, extraEnv: [{ name: 'CI_BOT_KEY', value: 'sk-ci-bot-0123456789abcdef' }] },
        /config\.keys\[0\]\.key holds a secret, but extraEnv sets CI_BOT_KEY as a plain value/,
      );
      const fromSecret = { name: 'VLLM_KEY', valueFrom: { secretKeyRef: { name: 'vllm', key: 'token' } } };
      assert.doesNotThrow(() => renderChart({ config: { model_list: [model] }, extraEnv: [fromSecret] }));
    });

    it("a Check timeout under 1 s (tollgate may wait 0.7 s on the store; Envoy's 503 would come first)", () => {
      refused({ envoy: { authzTimeout: '0.5s' } }, /envoy\.authzTimeout 0\.5s must be at least 1s/);
      refused({ envoy: { authzTimeout: '0.999s' } }, /envoy\.authzTimeout 0\.999s must be at least 1s/);
      assert.doesNotThrow(() => renderChart({ envoy: { authzTimeout: '1s' } }));
    });

    it('a data-directory claim with several replicas (one PGlite process may open it)', () => {
      const stores = {
        config: { general_settings: { database_url: 'os.environ/DATABASE_URL', redis_url: 'os.environ/REDIS_URL' } },
        secretEnv: ['TOLLGATE_MASTER_KEY', 'DATABASE_URL', 'REDIS_URL'].map((name) => ({ name })),
      };
      refused(
        { ...stores, replicaCount: 2, dataDir: { persistence: { enabled: true } } },
        /dataDir\.persistence is one replica's embedded PGlite/,
      );
      assert.doesNotThrow(() => renderChart({ ...stores, replicaCount: 2 }));
    });

    it("an Envoy idle timeout at or below tollgate's longest silence: the longest timeout times num_retries + 1", () => {
      const models = (timeouts: Array<number | undefined>, router: GoMap = {}): GoMap => ({
        config: {
          model_list: timeouts.map((timeout, i) => ({
            model_name: `m${i}`,
            litellm_params: { model: `openai/m${i}`, api_base: 'http://vllm:8000/v1', ...(timeout === undefined ? {} : { timeout }) },
          })),
          router_settings: router,
        },
      });
      // The defaults: 600 s per attempt, 2 retries, so 1800 s of silence; the idle timeout is 1860s.
      assert.doesNotThrow(() => renderChart(models([undefined, 600, 619.5])));
      // The check the chart used to make (idle above one timeout) passed 660s; tollgate's retries outlast it.
      refused(
        { envoy: { streamIdleTimeout: '660s' } },
        /envoy\.streamIdleTimeout 660s must be greater than 1800 s: the longest deployment timeout, 600 s \(the default deployment timeout, 600 s when router_settings\.timeout is unset\), times 3 attempts \(the first, and router_settings\.num_retries's default of 2 retries\)\. .*Envoy would reset it \(504 upstream_timeout\)/,
      );
      refused(
        models([undefined, 620]),
        /greater than 1860 s: the longest deployment timeout, 620 s \(config\.model_list\[1\]\.litellm_params\.timeout\), times 3 attempts/,
      );
      // num_retries counts, from router_settings or LiteLLM's litellm_settings (router_settings wins), 0 included.
      refused(models([], { num_retries: 3 }), /greater than 2400 s: .* times 4 attempts \(the first, and router_settings\.num_retries 3\)/);
      refused({ config: { litellm_settings: { num_retries: 3 } } }, /times 4 attempts \(the first, and litellm_settings\.num_retries 3\)/);
      assert.doesNotThrow(() => renderChart({ config: { litellm_settings: { num_retries: 3 }, router_settings: { num_retries: 2 } } }));
      assert.doesNotThrow(() => renderChart({ ...models([900], { num_retries: 0 }), envoy: { streamIdleTimeout: '900.5s' } }));
      refused({ ...models([900], { num_retries: 0 }), envoy: { streamIdleTimeout: '900s' } }, /greater than 900 s: .* times 1 attempts/);
      // router_settings.timeout (or litellm_settings.request_timeout) is every other deployment's, and the API's.
      refused(
        models([], { timeout: 700 }),
        /greater than 2100 s: the longest deployment timeout, 700 s \(config\.router_settings\.timeout \(or litellm_settings\.request_timeout\)\)/,
      );
      refused({ config: { litellm_settings: { request_timeout: 660 } } }, /greater than 1980 s: .*litellm_settings\.request_timeout/);
      assert.doesNotThrow(() => renderChart({ ...models([300, 400], { timeout: 300 }), envoy: { streamIdleTimeout: '1201s' } }));
      assert.doesNotThrow(() => renderChart(models([], { timeout: 619 })));
    });

    it("a request body limit above half Envoy's heap cap (one body would take Envoy to its overload actions)", () => {
      const size = (mb: number, envoy: GoMap = {}): GoMap => ({ config: { general_settings: { max_request_size_mb: mb } }, envoy });
      // 300 MiB against 80% of 256 MiB: max_request_bytes 314572800 above the whole cap, 214748364.
      refused(
        size(300),
        /config\.general_settings\.max_request_size_mb 300 \(Envoy buffers up to 314572800 bytes of each request body before authorizing it\) must be at most half of Envoy's heap cap, 214748364 bytes .*Raise envoy\.resources\.limits\.memory \(or envoy\.overload\.maxHeapSizeBytes\)/,
      );
      refused(size(103), /max_request_size_mb 103 .* heap cap, 214748364 bytes/);
      assert.doesNotThrow(() => renderChart(size(102)));
      assert.doesNotThrow(() => renderChart(size(300, { resources: { limits: { memory: '1Gi' } } })));
      assert.doesNotThrow(() => renderChart(size(300, { overload: { maxHeapSizeBytes: 700_000_000 } })));
    });

    it('a chart-made Secret missing a variable the pods read', () => {
      refused(
        { secret: { create: true, values: {} } },
        /secretEnv TOLLGATE_MASTER_KEY: secret\.create is true but secret\.values has no TOLLGATE_MASTER_KEY/,
      );
    });

    it("a shutdown Envoy or the kubelet would cut short: Envoy must outlive tollgate's preStop and drain, the grace period both", () => {
      // The defaults: tollgate serves 5 s and drains 30 s; Envoy sleeps 40 s; the grace period is 60 s.
      assert.doesNotThrow(() => renderChart());
      assert.doesNotThrow(() =>
        renderChart({ preStopSleepSeconds: 5, drainSeconds: 30, envoy: { preStopSleepSeconds: 40 }, terminationGracePeriodSeconds: 45 }),
      );
      // Each sleep shorter than the one before it, as the chart used to accept: Envoy would exit mid-drain.
      const tight = { preStopSleepSeconds: 15, envoy: { preStopSleepSeconds: 20 }, terminationGracePeriodSeconds: 21 };
      refused(tight, /envoy\.preStopSleepSeconds \(20\) must be at least preStopSleepSeconds \+ drainSeconds \+ 5 \(50\)/);
      // The same with no drain at all: Envoy now outlives tollgate, but the kubelet kills it 1 s after its sleep.
      refused(
        { ...tight, drainSeconds: 0 },
        /terminationGracePeriodSeconds \(21\) must be at least envoy\.preStopSleepSeconds \+ 5 \(25\)/,
      );
      assert.doesNotThrow(() => renderChart({ ...tight, drainSeconds: 0, terminationGracePeriodSeconds: 25 }));
      refused({ drainSeconds: 120 }, /envoy\.preStopSleepSeconds \(40\) must be at least preStopSleepSeconds \+ drainSeconds \+ 5 \(130\)/);
      refused(
        { terminationGracePeriodSeconds: 44 },
        /terminationGracePeriodSeconds \(44\) must be at least envoy\.preStopSleepSeconds \+ 5 \(45\)/,
      );
    });

    it('an HPA CPU target without CPU requests on both containers', () => {
      refused(
        // null deletes a default, as in Helm: Envoy is left with a memory request only.
        { ...FULL_VALUES, envoy: { resources: { requests: { cpu: null } } } },
        /a CPU utilization target needs resources\.requests\.cpu and envoy\.resources\.requests\.cpu/,
      );
    });

    it('values.schema.json: unknown chart keys, unknown or invalid config keys, malformed durations', () => {
      const issues = (override: GoMap): readonly string[] => {
        try {
          renderChart(override);
        } catch (err) {
          if (err instanceof ValuesSchemaError) return err.issues;
          throw err;
        }
        assert.fail('rendered');
      };
      assert.deepEqual(issues({ replicaCont: 2 }), ['replicaCont: unknown key']);
      assert.deepEqual(issues({ config: { general_settings: { master_kee: 'os.environ/K' } } }), [
        'config.general_settings.master_kee: unknown key',
      ]);
      // A secret may only be a reference: the config is rendered into a ConfigMap.
      assert.deepEqual(issues({ config: { general_settings: { master_key: 'sk-literal-master-key-0123456789' } } }), [
        'config.general_settings.master_key: does not match ^os\\.environ/[A-Za-z_][A-Za-z0-9_]*$',
      ]);
      assert.match(
        issues({ config: { general_settings: { failure_mode: 'sometimes' } } }).join('\n'),
        /config\.general_settings\.failure_mode: matches none of anyOf/,
      );
      assert.deepEqual(issues({ drainSeconds: 3601 }), ['drainSeconds: above 3600']);
      assert.deepEqual(issues({ envoy: { authzTimeout: '1 second' } }), ['envoy.authzTimeout: does not match ^\\d+(\\.\\d+)?s$']);
      assert.match(issues({ envoy: { xffNumTrustedHops: -1 } }).join('\n'), /envoy\.xffNumTrustedHops: below 0/);
      assert.match(issues({ envoy: { xffNumTrustedHops: 'one' } }).join('\n'), /envoy\.xffNumTrustedHops: expected integer/);
      assert.match(issues({ envoy: { concurrency: 0 } }).join('\n'), /envoy\.concurrency: below 1/);
      assert.deepEqual(issues({ envoy: { tls: { secret: 'x' } } }), ['envoy.tls.secret: unknown key']);
      assert.match(issues({ service: { externalTrafficPolicy: 'local' } }).join('\n'), /service\.externalTrafficPolicy/);
      assert.match(issues({ image: { tag: 1.2 } }).join('\n'), /image\.tag: expected string/);
      // os.environ/NAME stands in for any string of the config, as tollgate resolves it before validating.
      assert.doesNotThrow(() =>
        renderChart({
          config: { general_settings: { master_key: 'os.environ/OTHER_KEY', failure_mode: 'os.environ/FAILURE_MODE' } },
          secretEnv: [{ name: 'OTHER_KEY' }],
          extraEnv: [{ name: 'FAILURE_MODE', value: 'closed' }],
        }),
      );
    });
  });
});
