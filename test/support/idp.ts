// A real OpenID Connect provider (the `oidc-provider` package) for tests.
//
// - listens on http://127.0.0.1:<ephemeral port>
// - issues client-credentials access tokens as RS256 JWTs (typ "at+jwt") via
//   resource indicators (the `resource` parameter selects the audience)
// - per-request extra claims / TTL are passed to the provider through a private
//   request header that refers to an entry in an in-process map, so concurrent
//   token() calls cannot mix up their claims
// - rotateKey() rebuilds the Provider instance (new keystore) behind the same
//   node:http server, so the issuer URL never changes
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import type { Adapter, AdapterPayload, Configuration, Provider as ProviderClass, ProviderContext } from 'oidc-provider';

export interface TestIdp {
  /** issuer URL, e.g. http://127.0.0.1:PORT (no trailing slash) */
  readonly issuer: string;
  /** the jwks_uri as advertised in discovery */
  readonly jwksUri: string;
  /** a client-credentials access token (RS256 JWT, typ "at+jwt") for `audience` (default: the audience given at start), with extra claims merged into the token (they override standard claims such as sub); expiresIn in whole seconds (default 300); obtained through the real token endpoint with client_secret_basic */
  token(opts?: { audience?: string; claims?: Record<string, unknown>; expiresIn?: number; scope?: string }): Promise<string>;
  /** replace the provider's signing key by a new RSA key with a new kid (old key removed from JWKS unless keepOld); tokens issued afterwards carry the new kid */
  rotateKey(opts?: { keepOld?: boolean }): Promise<{ kid: string }>;
  /** the current signing private key as a JWK and its kid */
  signingKey(): { kid: string; privateJwk: Record<string, unknown>; publicJwk: Record<string, unknown> };
  /** number of GET requests the jwks_uri has answered */
  jwksFetches(): number;
  /**
   * hold the jwks_uri's answers from now on: GETs wait until release() (then each is answered with the key
   * set current at that moment); `arrived` settles when the first held GET has come in — a fetch is running
   */
  holdJwks(): { readonly arrived: Promise<void>; release(): void };
  close(): Promise<void>;
}

interface SigningKey {
  kid: string;
  privateJwk: Record<string, unknown>;
  publicJwk: Record<string, unknown>;
}

interface PendingRequest {
  claims: Record<string, unknown> | undefined;
  expiresIn: number | undefined;
}

/** Header used to correlate a token request with its pending extra claims/TTL. */
const REQUEST_HEADER = 'x-tollgate-test-idp-request';
/** Scopes the test resource servers accept (any subset may be requested). */
const RESOURCE_SCOPES = 'read write admin';
const DEFAULT_TTL_SECONDS = 300;
/** Non-URI audiences are carried in the `resource` parameter as this URN. */
const AUDIENCE_URN_PREFIX = 'urn:tollgate-test-audience:';

type ProviderCtor = typeof ProviderClass;
let providerCtor: Promise<ProviderCtor> | undefined;

/**
 * Load oidc-provider once. On Node < 22 it prints an "Unsupported runtime"
 * warning at import time; that (and only that) is filtered out.
 */
function loadProvider(): Promise<ProviderCtor> {
  providerCtor ??= (async () => {
    const original = console.warn;
    console.warn = (...args: unknown[]): void => {
      const first = args[0];
      if (typeof first === 'string' && first.includes('oidc-provider WARNING: Unsupported runtime')) return;
      original.apply(console, args);
    };
    try {
      const mod = await import('oidc-provider');
      return mod.default;
    } finally {
      console.warn = original;
    }
  })();
  return providerCtor;
}

async function newSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomUUID();
  const meta = { kid, alg: 'RS256', use: 'sig' };
  const privateJwk: Record<string, unknown> = { ...(await exportJWK(privateKey)), ...meta };
  const publicJwk: Record<string, unknown> = { ...(await exportJWK(publicKey)), ...meta };
  return { kid, privateJwk, publicJwk };
}

/** Tiny in-memory adapter (avoids the provider's "dev-only adapter" warning). */
function memoryAdapterFactory(): (name: string) => Adapter {
  const store = new Map<string, { payload: AdapterPayload; expiresAt: number | undefined }>();
  return (name: string): Adapter => {
    const key = (id: string): string => `${name}:${id}`;
    const get = (id: string): AdapterPayload | undefined => {
      const entry = store.get(key(id));
      if (!entry) return undefined;
      if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
        store.delete(key(id));
        return undefined;
      }
      return entry.payload;
    };
    const findBy = (field: string, value: string): AdapterPayload | undefined => {
      for (const [k, entry] of store) {
        if (k.startsWith(`${name}:`) && entry.payload[field] === value) return entry.payload;
      }
      return undefined;
    };
    return {
      upsert: async (id, payload, expiresIn) => {
        store.set(key(id), {
          payload,
          expiresAt: expiresIn > 0 ? Date.now() + expiresIn * 1000 : undefined,
        });
      },
      find: async (id) => get(id),
      findByUserCode: async (userCode) => findBy('userCode', userCode),
      findByUid: async (uid) => findBy('uid', uid),
      consume: async (id) => {
        const payload = get(id);
        if (payload) payload['consumed'] = Math.floor(Date.now() / 1000);
      },
      destroy: async (id) => {
        store.delete(key(id));
      },
      revokeByGrantId: async (grantId) => {
        for (const [k, entry] of store) {
          if (entry.payload['grantId'] === grantId) store.delete(k);
        }
      },
    };
  };
}

function isAbsoluteUriWithoutFragment(value: string): boolean {
  if (!URL.canParse(value)) return false;
  return new URL(value).hash === '' && !value.includes('#');
}

function audienceToResource(audience: string): string {
  return isAbsoluteUriWithoutFragment(audience) ? audience : `${AUDIENCE_URN_PREFIX}${encodeURIComponent(audience)}`;
}

function resourceToAudience(resource: string): string {
  return resource.startsWith(AUDIENCE_URN_PREFIX) ? decodeURIComponent(resource.slice(AUDIENCE_URN_PREFIX.length)) : resource;
}

export async function startIdp(opts: { audience: string; clientId?: string; clientSecret?: string }): Promise<TestIdp> {
  const Provider = await loadProvider();
  const clientId = opts.clientId ?? 'tollgate-test-client';
  const clientSecret = opts.clientSecret ?? 'tollgate-test-secret-0123456789abcdef';
  const defaultAudience = opts.audience;

  const pending = new Map<string, PendingRequest>();
  const adapter = memoryAdapterFactory();
  let keys: SigningKey[] = [await newSigningKey()];
  let jwksGets = 0;
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  let jwksPath = '/jwks';
  let held: { arrive: () => void; released: Promise<void> } | undefined;

  const pendingFor = (ctx: ProviderContext): PendingRequest | undefined => {
    const id = ctx.get(REQUEST_HEADER);
    return id ? pending.get(id) : undefined;
  };

  const currentKey = (): SigningKey => {
    const k = keys[0];
    if (!k) throw new Error('test IdP has no signing key');
    return k;
  };

  const buildProvider = (issuer: string): ProviderClass => {
    const signingKid = currentKey().kid;
    const configuration: Configuration = {
      adapter,
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
          token_endpoint_auth_method: 'client_secret_basic',
          scope: RESOURCE_SCOPES,
        },
      ],
      jwks: { keys: keys.map((k) => k.privateJwk) },
      scopes: RESOURCE_SCOPES.split(' '),
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        introspection: { enabled: false },
        revocation: { enabled: false },
        resourceIndicators: {
          enabled: true,
          defaultResource: async () => audienceToResource(defaultAudience),
          useGrantedResource: async () => true,
          getResourceServerInfo: async (ctx, resourceIndicator) => ({
            scope: RESOURCE_SCOPES,
            audience: resourceToAudience(resourceIndicator),
            accessTokenFormat: 'jwt',
            accessTokenTTL: pendingFor(ctx)?.expiresIn ?? DEFAULT_TTL_SECONDS,
            jwt: { sign: { alg: 'RS256', kid: signingKid } },
          }),
        },
      },
      // The resource server's accessTokenTTL is only honoured by the *default*
      // ttl.ClientCredentials helper (which also prints a notice), so set it here.
      ttl: {
        ClientCredentials: (ctx) => pendingFor(ctx)?.expiresIn ?? DEFAULT_TTL_SECONDS,
      },
      // Extra claims land in the JWT via extraTokenClaims, but the provider spreads
      // them *before* its own claims (sub, jti, iat, exp, scope, client_id, iss,
      // aud). Re-apply them in the JWT customizer so a test can e.g. set `sub`.
      extraTokenClaims: async (ctx) => {
        const claims = pendingFor(ctx)?.claims;
        return claims ? { ...claims } : undefined;
      },
      formats: {
        customizers: {
          jwt: (ctx, _token, jwt) => {
            const claims = pendingFor(ctx)?.claims;
            if (claims) Object.assign(jwt.payload, claims);
          },
        },
      },
    };
    const provider = new Provider(issuer, configuration);
    // Plain-http issuer on loopback: don't trust X-Forwarded-*; nothing else needed.
    provider.proxy = false;
    return provider;
  };

  const dispatch = (req: IncomingMessage, res: ServerResponse): void => {
    if (!handler) {
      res.statusCode = 503;
      res.end();
      return;
    }
    handler(req, res);
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === jwksPath) {
      res.once('finish', () => {
        if (res.statusCode === 200) jwksGets += 1;
      });
      if (held !== undefined) {
        held.arrive();
        void held.released.then(() => dispatch(req, res));
        return;
      }
    }
    dispatch(req, res);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://127.0.0.1:${port}`;

  const install = (): void => {
    handler = buildProvider(issuer).callback();
  };
  install();

  const discoveryRes = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (!discoveryRes.ok) {
    throw new Error(`test IdP discovery failed: HTTP ${discoveryRes.status}`);
  }
  const discovery: unknown = await discoveryRes.json();
  const field = (name: string): string => {
    const value = typeof discovery === 'object' && discovery !== null ? (discovery as Record<string, unknown>)[name] : undefined;
    if (typeof value !== 'string') throw new Error(`test IdP discovery lacks ${name}`);
    return value;
  };
  const jwksUri = field('jwks_uri');
  const tokenEndpoint = field('token_endpoint');
  jwksPath = new URL(jwksUri).pathname;

  let closed = false;

  return {
    issuer,
    jwksUri,

    async token(o = {}): Promise<string> {
      if (closed) throw new Error('test IdP is closed');
      if (o.expiresIn !== undefined && (!Number.isInteger(o.expiresIn) || o.expiresIn < 1)) {
        throw new Error('expiresIn must be a positive integer number of seconds');
      }
      const requestId = randomUUID();
      pending.set(requestId, { claims: o.claims, expiresIn: o.expiresIn });
      try {
        const body = new URLSearchParams({
          grant_type: 'client_credentials',
          resource: audienceToResource(o.audience ?? defaultAudience),
        });
        if (o.scope !== undefined) body.set('scope', o.scope);
        const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
        const res = await fetch(tokenEndpoint, {
          method: 'POST',
          headers: {
            authorization: `Basic ${basic}`,
            'content-type': 'application/x-www-form-urlencoded',
            accept: 'application/json',
            [REQUEST_HEADER]: requestId,
          },
          body,
        });
        const json: unknown = await res.json();
        const accessToken = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['access_token'] : undefined;
        if (!res.ok || typeof accessToken !== 'string') {
          throw new Error(`test IdP token request failed: HTTP ${res.status} ${JSON.stringify(json)}`);
        }
        return accessToken;
      } finally {
        pending.delete(requestId);
      }
    },

    async rotateKey(o = {}): Promise<{ kid: string }> {
      const fresh = await newSigningKey();
      keys = o.keepOld ? [fresh, ...keys] : [fresh];
      install();
      return { kid: fresh.kid };
    },

    signingKey(): SigningKey {
      const k = currentKey();
      return { kid: k.kid, privateJwk: { ...k.privateJwk }, publicJwk: { ...k.publicJwk } };
    },

    jwksFetches(): number {
      return jwksGets;
    },

    holdJwks(): { arrived: Promise<void>; release(): void } {
      let arrive = (): void => {};
      let release = (): void => {};
      const arrived = new Promise<void>((resolve) => (arrive = resolve));
      const hold = { arrive, released: new Promise<void>((resolve) => (release = resolve)) };
      held = hold;
      return {
        arrived,
        release: () => {
          if (held === hold) held = undefined;
          release();
        },
      };
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      handler = undefined;
      await new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
