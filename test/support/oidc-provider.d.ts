// Minimal local typings for the parts of `oidc-provider` (v9, ships no types)
// used by test/support/idp.ts. Deliberately narrow; extend only as needed.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  /** The Koa context the provider passes to helper functions (only what we read). */
  export interface ProviderContext {
    /** Koa: value of a request header ('' when absent). */
    get(field: string): string;
  }

  export interface ResourceServerInfo {
    scope: string;
    audience?: string;
    accessTokenTTL?: number;
    accessTokenFormat?: 'opaque' | 'jwt';
    jwt?: { sign?: { alg?: string; kid?: string } };
  }

  /** What formats.customizers.jwt receives and may mutate before signing. */
  export interface StructuredJwt {
    header: Record<string, unknown> | undefined;
    payload: Record<string, unknown>;
  }

  export interface AdapterPayload {
    [key: string]: unknown;
  }

  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export interface ClientMetadata {
    client_id: string;
    client_secret?: string;
    grant_types?: string[];
    response_types?: string[];
    redirect_uris?: string[];
    token_endpoint_auth_method?: string;
    scope?: string;
  }

  export interface Configuration {
    adapter?: (name: string) => Adapter;
    clients?: ClientMetadata[];
    jwks?: { keys: Record<string, unknown>[] };
    scopes?: string[];
    features?: {
      devInteractions?: { enabled: boolean };
      clientCredentials?: { enabled: boolean };
      introspection?: { enabled: boolean };
      revocation?: { enabled: boolean };
      resourceIndicators?: {
        enabled: boolean;
        defaultResource?: (ctx: ProviderContext, client: unknown, oneOf?: string[]) => Promise<string | string[] | undefined>;
        useGrantedResource?: (ctx: ProviderContext, model: unknown) => Promise<boolean>;
        getResourceServerInfo?: (ctx: ProviderContext, resourceIndicator: string, client: unknown) => Promise<ResourceServerInfo>;
      };
    };
    ttl?: {
      ClientCredentials?: (ctx: ProviderContext, token: unknown, client: unknown) => number;
    };
    formats?: {
      customizers?: {
        jwt?: (ctx: ProviderContext, token: unknown, jwt: StructuredJwt) => Promise<void> | void;
      };
    };
    extraTokenClaims?: (ctx: ProviderContext, token: unknown) => Promise<Record<string, unknown> | undefined>;
  }

  export class Provider {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    /** Koa: trust X-Forwarded-* headers. */
    proxy: boolean;
    /** Koa: node:http request listener. */
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }

  export default Provider;
}
