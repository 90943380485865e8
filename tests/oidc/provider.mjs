// A real OpenID Connect provider for idgov's tests (panva/oidc-provider).
//
//   PORT=… KEYS_FILE=keys.json GROUPS_FILE=groups.json node provider.mjs
//
// - KEYS_FILE: a JSON array of private JWKs (each with a kid and alg); the
//   first signs. Restart with another file to rotate keys.
// - GROUPS_FILE: {"E1001": ["idgov-admins"], …}: the `groups` claim of users;
//   every user's `email` claim is <lowercased id>@example.com.
// Clients: "hr-feed" (client_credentials, secret "hr-feed-secret"),
// "idgov-cli" (authorization code + PKCE, public) and "idgov-web" (the web
// app: authorization code + PKCE, secret "idgov-web-secret", any loopback
// port for /auth/callback). Access tokens for the resource "urn:idgov" are
// JWTs with audience "idgov". ID tokens carry `groups` and `email`.
// Login: the user named by login_hint is logged in at once; without one, a
// login page asks for a user id (what a browser test types). Consent is
// implied (tests only).
import Provider, { errors } from 'oidc-provider';
import { readFileSync } from 'node:fs';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const keys = JSON.parse(readFileSync(process.env.KEYS_FILE, 'utf8'));
const groups = process.env.GROUPS_FILE ? JSON.parse(readFileSync(process.env.GROUPS_FILE, 'utf8')) : {};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'hr-feed',
      client_secret: 'hr-feed-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
    {
      client_id: 'idgov-cli',
      token_endpoint_auth_method: 'none',
      id_token_signed_response_alg: keys[0].alg,
      grant_types: ['authorization_code'],
      redirect_uris: ['http://127.0.0.1:9/callback'],
      response_types: ['code'],
    },
    {
      client_id: 'idgov-web',
      client_secret: 'idgov-web-secret',
      application_type: 'native',
      id_token_signed_response_alg: keys[0].alg,
      grant_types: ['authorization_code'],
      redirect_uris: ['http://127.0.0.1/auth/callback'],
      post_logout_redirect_uris: ['http://127.0.0.1/signin'],
      response_types: ['code'],
    },
  ],
  jwks: { keys },
  conformIdTokenClaims: false,
  claims: { openid: ['sub', 'groups', 'email'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, groups: groups[id] ?? [], email: `${id.toLowerCase()}@example.com` }),
  }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:idgov',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== 'urn:idgov') throw new errors.InvalidTarget();
        return {
          scope: 'openid idgov',
          audience: 'idgov',
          accessTokenTTL: Number(process.env.TOKEN_TTL ?? 300),
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: keys[0].alg } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx, token) =>
    token.accountId
      ? { groups: groups[token.accountId] ?? [], email: `${token.accountId.toLowerCase()}@example.com` }
      : {},
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid');
    grant.addResourceScope('urn:idgov', 'openid idgov');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    // Consent is implied (native clients are always asked: answer for them).
    if (details.prompt.name === 'consent') {
      const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      grant.addOIDCScope(details.params.scope ?? 'openid');
      grant.addResourceScope('urn:idgov', 'openid idgov');
      const grantId = await grant.save();
      await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    const accountId = details.params.login_hint || ctx.query.login;
    if (!accountId) {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>Test provider sign-in</title>
<form method="get" action="${ctx.path}"><label>User <input name="login" id="login"></label>
<button type="submit" id="provider-submit">Sign in</button></form>`;
      return;
    }
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
