// Peer for the CBST token-endpoint benchmark: node-oidc-provider (9.x) configured for the
// client_credentials grant only, one confidential client (client_secret_basic), JWT access
// tokens signed with ES256 for one resource indicator.
//
// Usage: node server.js [PORT] [WORKERS]
//   env PEER_PORT (default 4100), PEER_HOST (default 127.0.0.1), PEER_WORKERS (default 2),
//       PEER_CLIENT_ID (default bench), PEER_CLIENT_SECRET (default bench-secret),
//       PEER_AUDIENCE (default https://mcp.example.test/mcp), PEER_SCOPE (default tools/call:*)
//   argv wins over env.
//
// The primary process generates one ES256 key and hands it to the workers (node:cluster), so
// every worker signs with the same key and serves the same JWKS.

import cluster from 'node:cluster';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';

const HOST = process.env.PEER_HOST || '127.0.0.1';
const PORT = Number(process.argv[2] || process.env.PEER_PORT || 4100);
const WORKERS = Math.max(1, Number(process.argv[3] || process.env.PEER_WORKERS || 2));
const CLIENT_ID = process.env.PEER_CLIENT_ID || 'bench';
const CLIENT_SECRET = process.env.PEER_CLIENT_SECRET || 'bench-secret';
const AUDIENCE = process.env.PEER_AUDIENCE || 'https://mcp.example.test/mcp';
const SCOPE = process.env.PEER_SCOPE || 'tools/call:*';
const ISSUER = `http://${HOST}:${PORT}`;

if (cluster.isPrimary) {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const keyEnv = JSON.stringify({
    ...jwk, alg: 'ES256', use: 'sig', kid: randomBytes(8).toString('hex'),
  });
  const cookieKey = randomBytes(32).toString('hex');

  const children = new Set();
  let stopping = false;
  const fork = () => {
    const w = cluster.fork({ PEER_SIGNING_JWK: keyEnv, PEER_COOKIE_KEY: cookieKey });
    children.add(w);
  };
  for (let i = 0; i < WORKERS; i += 1) fork();

  let online = 0;
  cluster.on('listening', () => {
    online += 1;
    if (online === WORKERS) {
      console.log(`oidc-provider peer listening on ${ISSUER} with ${WORKERS} worker(s), pid ${process.pid}`);
    }
  });
  cluster.on('exit', (w, code, signal) => {
    children.delete(w);
    if (!stopping) {
      console.error(`worker ${w.process.pid} died (code ${code}, signal ${signal}); stopping`);
      shutdown(1);
    } else if (children.size === 0) {
      process.exit(0);
    }
  });
  const shutdown = (code = 0) => {
    if (stopping) return;
    stopping = true;
    for (const w of children) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(code), 3000).unref();
    if (children.size === 0) process.exit(code);
  };
  process.on('SIGTERM', () => shutdown(0));
  process.on('SIGINT', () => shutdown(0));
} else {
  const { default: Provider } = await import('oidc-provider');

  const signingKey = JSON.parse(process.env.PEER_SIGNING_JWK);

  const configuration = {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    }],
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: 'ES256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    jwks: { keys: [signingKey] },
    cookies: { keys: [process.env.PEER_COOKIE_KEY] },
    responseTypes: ['none'],
    scopes: [],
    claims: {},
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
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
    ttl: { ClientCredentials: 300 },
  };

  const provider = new Provider(ISSUER, configuration);
  // Log nothing per request; surface only server errors.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  const server = provider.listen(PORT, HOST);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', () => {}); // primary decides
}
