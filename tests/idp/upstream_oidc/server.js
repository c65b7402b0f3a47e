// The upstream OpenID Connect provider of the federation tests: node-oidc-provider (9.x) on
// loopback with one confidential client and test users, logged in through its development
// interactions (a plain HTML form: login name, any password, then a consent form), so a test
// drives it with an HTTP client that follows redirects and posts forms.
//
// Usage: node server.js PORT
//   env UPSTREAM_CLIENT_ID, UPSTREAM_CLIENT_SECRET, UPSTREAM_REDIRECT_URIS (space-separated),
//       UPSTREAM_USERS: JSON {"login": {"email": ..., "name": ..., "groups": [...]}, ...}
//       UPSTREAM_TTL_ID_TOKEN (seconds, default 300)
// It prints "listening <issuer>" once ready, and exits when its parent (the test) goes away:
// stdin is a pipe from the parent, whose end-of-file means the parent died or closed it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';

import Provider from 'oidc-provider';

const PORT = Number(process.argv[2] || process.env.UPSTREAM_PORT);
const ISSUER = `http://127.0.0.1:${PORT}`;
const USERS = JSON.parse(process.env.UPSTREAM_USERS || '{}');

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: randomBytes(8).toString('hex') };

const configuration = {
  clients: [{
    client_id: process.env.UPSTREAM_CLIENT_ID,
    client_secret: process.env.UPSTREAM_CLIENT_SECRET,
    redirect_uris: (process.env.UPSTREAM_REDIRECT_URIS || '').split(' ').filter(Boolean),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: true } },
  ttl: { IdToken: Number(process.env.UPSTREAM_TTL_ID_TOKEN || 300) },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined; // unknown login names cannot sign in
    return {
      accountId: id,
      async claims() {
        return {
          sub: id, email: user.email, email_verified: true, name: user.name, preferred_username: id,
          groups: user.groups || [],
        };
      },
    };
  },
};

const provider = new Provider(ISSUER, configuration);
const server = provider.listen(PORT, '127.0.0.1', () => {
  console.log(`listening ${ISSUER}`);
});

const stop = () => { server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
