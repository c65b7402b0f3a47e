// Peer for the CBST authorization-code benchmark: node-oidc-provider (9.x) with one public
// client (token_endpoint_auth_method none, PKCE S256), resource indicators (JWT access tokens,
// ES256, for one resource), offline_access refresh tokens rotated on every use.
//
// One process, no cluster: the adapter keeps sessions, grants and codes in this process's
// memory, so a code issued by one worker would be unknown to another (the CBST side runs one
// worker too).
//
// Usage: node codeflow.js [PORT]
//   env PEER_HOST (default 127.0.0.1), PEER_CLIENT_ID (default bench-public),
//       PEER_REDIRECT_URI (default http://127.0.0.1:9/callback), PEER_AUDIENCE, PEER_SCOPE,
//       PEER_ACCOUNT (default bench-user)
//
// Interactions (login, consent) have no pages: GET /interaction/:uid logs PEER_ACCOUNT in, and
// grants whatever the request asked for, with no form. The benchmark goes through that ONCE at
// setup to get a session cookie and a remembered grant; in the measured loop every /auth
// answers with the code redirect directly (the driver fails the run if one does not), so
// these routes are not on the measured path. GET /bench/stats says how many interactions ran.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';

import Provider from 'oidc-provider';

const HOST = process.env.PEER_HOST || '127.0.0.1';
const PORT = Number(process.argv[2] || process.env.PEER_PORT || 4200);
const CLIENT_ID = process.env.PEER_CLIENT_ID || 'bench-public';
const REDIRECT_URI = process.env.PEER_REDIRECT_URI || 'http://127.0.0.1:9/callback';
const AUDIENCE = process.env.PEER_AUDIENCE || 'https://mcp.example.test/mcp';
const SCOPE = process.env.PEER_SCOPE || 'tools/call:search';
const ACCOUNT = process.env.PEER_ACCOUNT || 'bench-user';
const ISSUER = `http://${HOST}:${PORT}`;

// oidc-provider's bundled MemoryAdapter rewrites a grant's whole member list (every code and token
// issued under it) on each save, with Math.max(...members): O(n) per request with one remembered
// grant, and a RangeError past ~100k tokens. A deployment uses a store with an O(1) grant index
// (the Redis adapter's list per grant); this is that, in memory: same semantics, Set per grant.
// PEER_ADAPTER=memory selects the bundled one instead.
class BenchAdapter {
  static store = new Map();        // key -> { payload, exp }
  static grants = new Map();       // grantId -> Set of keys
  static uids = new Map();         // session uid -> id

  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  static get(key) {
    const e = BenchAdapter.store.get(key);
    if (!e) return undefined;
    if (e.exp !== undefined && e.exp <= Date.now()) { BenchAdapter.store.delete(key); return undefined; }
    return e.payload;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    BenchAdapter.store.set(key, {
      payload, exp: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined,
    });
    if (this.model === 'Session') BenchAdapter.uids.set(payload.uid, id);
    if (payload.grantId && GRANTABLE.has(this.model)) {
      let set = BenchAdapter.grants.get(payload.grantId);
      if (!set) { set = new Set(); BenchAdapter.grants.set(payload.grantId, set); }
      set.add(key);
    }
  }

  async find(id) { return BenchAdapter.get(this.key(id)); }

  async findByUid(uid) { const id = BenchAdapter.uids.get(uid); return id && this.find(id); }

  async findByUserCode() { return undefined; }

  async consume(id) { const p = BenchAdapter.get(this.key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) {
    const key = this.key(id);
    const p = BenchAdapter.get(key);
    BenchAdapter.store.delete(key);
    if (p?.grantId) BenchAdapter.grants.get(p.grantId)?.delete(key);
  }

  async revokeByGrantId(grantId) {
    for (const key of BenchAdapter.grants.get(grantId) || []) BenchAdapter.store.delete(key);
    BenchAdapter.grants.delete(grantId);
  }
}
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest']);
// Expired entries go once a minute (as Redis expires keys), so memory stays flat over a long run.
setInterval(() => {
  const now = Date.now();
  for (const [key, e] of BenchAdapter.store) {
    if (e.exp !== undefined && e.exp <= now) {
      BenchAdapter.store.delete(key);
      if (e.payload.grantId) BenchAdapter.grants.get(e.payload.grantId)?.delete(key);
    }
  }
}, 60000).unref();

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: randomBytes(8).toString('hex'),
};

const configuration = {
  ...(process.env.PEER_ADAPTER === 'memory' ? {} : { adapter: BenchAdapter }),
  clients: [{
    client_id: CLIENT_ID,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
    token_endpoint_auth_method: 'none',
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access'],
  claims: { openid: ['sub'] },
  pkce: { required: () => true },
  // Rotate on every use, as the CBST IdP does (the default rotates public clients' tokens too).
  rotateRefreshToken: () => true,
  // oidc-provider honours offline_access only with prompt=consent (OpenID Connect Core 11), which
  // would force the consent page on every request; MCP clients send offline_access without it.
  // The documented way out: issue refresh tokens to a client allowed the refresh_token grant.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resourceIndicator) => {
        if (resourceIndicator !== AUDIENCE) {
          throw new Provider.errors.InvalidTarget();
        }
        return {
          scope: SCOPE,
          audience: AUDIENCE,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: 300, AuthorizationCode: 60, RefreshToken: 86400, Grant: 86400, Session: 86400, Interaction: 600,
  },
};

const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const stats = { interactions: 0 };

// The pages a real deployment would have, reduced to "yes": log ACCOUNT in, grant what was asked.
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/bench/stats') {
    ctx.body = stats;
    return undefined;
  }
  const m = ctx.method === 'GET' && ctx.path.match(/^\/interaction\/([\w-]+)$/);
  if (!m) return next();
  stats.interactions += 1;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (process.env.PEER_DEBUG) console.error('consent details', JSON.stringify(d), JSON.stringify(params));
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    ctx.status = 500;
    ctx.body = `unexpected prompt ${prompt.name}`;
    return undefined;
  }
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.respond = false;
  return undefined;
});

const server = provider.listen(PORT, HOST);
server.on('listening', () => console.log(`oidc-provider code-flow peer listening on ${ISSUER}, pid ${process.pid}`));
const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
