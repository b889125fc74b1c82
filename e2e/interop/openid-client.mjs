// openid-client (a certified, strictly validating relying party) against
// usher, driven by e2e/interop_openid_client_test.go over stdin/stdout:
//
//   [ID_TOKEN_ALG=ES256] node openid-client.mjs ISSUER CLIENT_ID REDIRECT_URI [INVITATION]
//   → prints {"authorizationUrl": …}
//   ← reads the callback URL (one line)
//   → prints {"idClaims": …, "idTokenAlg": …, "userinfo": …, "refreshed": {…}} or {"error": …}
//
// Without ID_TOKEN_ALG the client metadata names no
// id_token_signed_response_alg: the library's default (RS256, or whatever
// discovery lists) applies. With it, the library accepts only that algorithm.
import * as client from "openid-client";
import { createInterface } from "node:readline";

const [issuer, clientId, redirectUri, invitation] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const headerAlg = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[0], "base64url").toString()).alg;
const metadata = process.env.ID_TOKEN_ALG ? { id_token_signed_response_alg: process.env.ID_TOKEN_ALG } : undefined;

try {
  // Plain http is allowed on loopback only, and only when asked for.
  const config = await client.discovery(new URL(issuer), clientId, metadata, client.None(), {
    execute: [client.allowInsecureRequests],
  });
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const params = {
    redirect_uri: redirectUri,
    scope: "openid profile email offline_access",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
  };
  if (invitation) params.invitation = invitation;
  say({ authorizationUrl: client.buildAuthorizationUrl(config, params).href });

  const callback = (await lines.next()).value;
  // Validates state, iss (RFC 9207, when advertised), the ID token (iss, aud,
  // exp, iat, nonce, azp) and PKCE.
  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const idClaims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub);
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  say({
    idClaims,
    idTokenAlg: headerAlg(tokens.id_token),
    userinfo,
    accessToken: tokens.access_token,
    refreshed: {
      idClaims: refreshed.claims(),
      idTokenAlg: headerAlg(refreshed.id_token),
      accessToken: refreshed.access_token,
      rotated: !!refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token,
    },
    issuerMetadata: { authorization_response_iss_parameter_supported: config.serverMetadata().authorization_response_iss_parameter_supported ?? false },
  });
} catch (e) {
  say({ error: `${e.name}: ${e.message}`, code: e.code, cause: e.cause ? String(e.cause.message || e.cause) : undefined });
  process.exitCode = 1;
} finally {
  process.stdin.destroy();
}
