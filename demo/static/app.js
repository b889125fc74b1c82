// usher demo single-page app: a plain OpenID Connect public client.
//
// Authorization code flow + PKCE (S256) with state and nonce; everything is
// kept in sessionStorage (per tab). No implicit flow, no libraries, no build.
//
// Element ids and window.demoState / body[data-ready] are relied on by the
// browser end-to-end tests: keep them stable.
'use strict';

(function () {
  const TX_KEY = 'usher-demo.tx'; // pending authorization request
  const TOKENS_KEY = 'usher-demo.tokens'; // token response

  let cfg = null; // /config.json
  let disco = null; // the issuer's discovery document

  const $ = (id) => document.getElementById(id);

  window.demoState = { idClaims: null, atClaims: null, userinfo: null, refreshToken: false };

  // ---- helpers -------------------------------------------------------------

  // joinURL joins base and path with exactly one slash between them.
  function joinURL(base, path) {
    return String(base).replace(/\/+$/, '') + '/' + String(path).replace(/^\/+/, '');
  }

  function b64urlEncode(bytes) {
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function b64urlDecodeToString(s) {
    let b64 = s.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  }

  function randomString(nbytes) {
    const a = new Uint8Array(nbytes || 32);
    crypto.getRandomValues(a);
    return b64urlEncode(a);
  }

  async function pkceChallenge(verifier) {
    if (!crypto.subtle) {
      throw new Error('WebCrypto is unavailable: serve the demo from a secure context (https, localhost or 127.0.0.1)');
    }
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
    return b64urlEncode(new Uint8Array(digest));
  }

  // decodeJWTPayload returns the payload of a compact JWS as an object, or null
  // when token is not a JWT. It does NOT verify the signature: this is a demo,
  // and signature verification is the business of the server / an OIDC
  // library. The checks below (nonce, iss, aud, exp) only guard the flow.
  function decodeJWTPayload(token) {
    if (typeof token !== 'string') return null;
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      const obj = JSON.parse(b64urlDecodeToString(parts[1]));
      return obj && typeof obj === 'object' && !Array.isArray(obj) ? obj : null;
    } catch (e) {
      return null;
    }
  }

  function loadJSON(key) {
    try {
      const v = sessionStorage.getItem(key);
      return v ? JSON.parse(v) : null;
    } catch (e) {
      return null;
    }
  }

  function saveJSON(key, v) {
    sessionStorage.setItem(key, JSON.stringify(v));
  }

  function pretty(v) {
    return JSON.stringify(v, null, 2);
  }

  // fetchJSON fetches url and returns its JSON body; OAuth error bodies become
  // "error: error_description" exceptions.
  async function fetchJSON(url, init) {
    const res = await fetch(url, init);
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (e) {
      body = null;
    }
    if (!res.ok) {
      let msg = 'HTTP ' + res.status + ' from ' + url;
      if (body && typeof body.error === 'string') {
        msg = body.error + (body.error_description ? ': ' + body.error_description : '');
      }
      const err = new Error(msg);
      err.status = res.status;
      err.body = body;
      throw err;
    }
    if (body === null || typeof body !== 'object') throw new Error('invalid JSON from ' + url);
    return body;
  }

  function redirectURI() {
    return location.origin + '/callback';
  }

  function postLogoutRedirectURI() {
    return location.origin + '/';
  }

  // ---- UI state ------------------------------------------------------------

  function setReady(on) {
    if (on) document.body.dataset.ready = '1';
    else delete document.body.dataset.ready;
  }

  function showError(e) {
    const el = $('error');
    el.textContent = e instanceof Error ? e.message : String(e);
    el.hidden = false;
    console.error(e);
  }

  function clearError() {
    const el = $('error');
    el.textContent = '';
    el.hidden = true;
  }

  function showMessage(text) {
    const el = $('message');
    el.textContent = text || '';
    el.hidden = !text;
  }

  // ---- the flow ------------------------------------------------------------

  // authorize starts an authorization request and navigates to the issuer.
  // extra holds additional authorize parameters (screen_hint, login_hint,
  // invitation, connection); empty values are left out.
  async function authorize(extra, opts) {
    if (!cfg || !disco) throw new Error('not configured (config.json or discovery failed)');
    const state = randomString(32);
    const nonce = randomString(32);
    const verifier = randomString(32); // 43 characters, RFC 7636 §4.1
    const challenge = await pkceChallenge(verifier);
    const redirect = redirectURI();
    saveJSON(TX_KEY, { state: state, nonce: nonce, verifier: verifier, redirect_uri: redirect, created_at: Date.now() });

    const u = new URL(disco.authorization_endpoint);
    for (const [k, v] of Object.entries(extra || {})) {
      if (v) u.searchParams.set(k, v);
    }
    // The protocol parameters come last so that extras can never override them.
    const params = {
      response_type: 'code',
      client_id: cfg.client_id,
      redirect_uri: redirect,
      scope: cfg.scope,
      state: state,
      nonce: nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    };
    for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);

    if (opts && opts.replace) location.replace(u.toString());
    else location.assign(u.toString());
  }

  function selectedConnection() {
    const el = $('connection');
    return el ? el.value : '';
  }

  function audienceIncludes(aud, clientID) {
    return Array.isArray(aud) ? aud.includes(clientID) : aud === clientID;
  }

  // checkIDToken performs the client-side sanity checks on an ID token's
  // claims. The signature is not verified here (see decodeJWTPayload).
  function checkIDToken(idToken, expectedNonce) {
    const claims = decodeJWTPayload(idToken);
    if (!claims) throw new Error('token response has no (decodable) id_token');
    if (expectedNonce !== undefined && claims.nonce !== expectedNonce) {
      throw new Error('ID token nonce does not match the one sent in the authorization request');
    }
    if (claims.iss !== disco.issuer) {
      throw new Error('ID token iss ' + JSON.stringify(claims.iss) + ' is not the issuer ' + JSON.stringify(disco.issuer));
    }
    if (!audienceIncludes(claims.aud, cfg.client_id)) {
      throw new Error('ID token audience does not include client_id ' + cfg.client_id);
    }
    if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now() - 60000) {
      throw new Error('ID token has expired');
    }
    return claims;
  }

  function storeTokens(tok, prev) {
    saveJSON(TOKENS_KEY, {
      id_token: tok.id_token || (prev && prev.id_token) || null,
      access_token: tok.access_token || null,
      // RFC 6749 §6: without a new refresh token the old one stays valid.
      refresh_token: tok.refresh_token || (prev && prev.refresh_token) || null,
      token_type: tok.token_type || null,
      scope: tok.scope || (prev && prev.scope) || null,
      expires_at: typeof tok.expires_in === 'number' ? Date.now() + tok.expires_in * 1000 : null,
    });
  }

  function tokenRequest(params) {
    return fetchJSON(disco.token_endpoint, {
      method: 'POST',
      headers: { Accept: 'application/json' },
      body: new URLSearchParams(params), // application/x-www-form-urlencoded
      cache: 'no-store',
    });
  }

  // handleCallback processes /callback?code=…&state=… (or ?error=…).
  async function handleCallback(q) {
    const tx = loadJSON(TX_KEY);
    sessionStorage.removeItem(TX_KEY); // single use, whatever happens
    history.replaceState(null, '', '/'); // the code leaves the URL (and history)

    if (q.has('error')) {
      const desc = q.get('error_description');
      throw new Error(q.get('error') + (desc ? ': ' + desc : ''));
    }
    if (!tx) throw new Error('callback without a pending sign-in in this tab (no stored state)');
    if (!q.get('state') || q.get('state') !== tx.state) throw new Error('state mismatch: ignoring the callback');
    // RFC 9207 authorization response issuer identification.
    const iss = q.get('iss');
    if (iss !== null && iss !== disco.issuer) throw new Error('callback iss ' + JSON.stringify(iss) + ' is not the issuer');
    if (iss === null && disco.authorization_response_iss_parameter_supported === true) {
      throw new Error('callback is missing the iss parameter the issuer advertises');
    }
    const code = q.get('code');
    if (!code) throw new Error('callback without code');

    const tok = await tokenRequest({
      grant_type: 'authorization_code',
      code: code,
      redirect_uri: tx.redirect_uri,
      client_id: cfg.client_id,
      code_verifier: tx.verifier,
    });
    checkIDToken(tok.id_token, tx.nonce);
    storeTokens(tok, null);
  }

  // handleInitiateLogin processes /login (OIDC Core §4 initiate_login_uri).
  // Returns true when it navigated away to the authorization endpoint.
  async function handleInitiateLogin(q) {
    const iss = q.get('iss');
    if (!iss || (iss !== cfg.issuer && iss !== disco.issuer)) {
      history.replaceState(null, '', '/');
      showError('ignored login request: iss ' + JSON.stringify(iss) + ' is not the configured issuer ' + JSON.stringify(cfg.issuer));
      return false;
    }
    showMessage('redirecting to sign in…');
    // replace: the back button must not land on /login and start over.
    await authorize({ login_hint: q.get('login_hint'), invitation: q.get('invitation') }, { replace: true });
    return true;
  }

  async function refresh() {
    const prev = loadJSON(TOKENS_KEY);
    if (!prev || !prev.refresh_token) throw new Error('no refresh token (was offline_access granted?)');
    const tok = await tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: prev.refresh_token,
      client_id: cfg.client_id, // public client: no secret
    });
    if (tok.id_token) {
      // OIDC Core §12.2: same iss, aud and sub; nonce is not required here.
      const claims = checkIDToken(tok.id_token, undefined);
      const old = decodeJWTPayload(prev.id_token);
      if (old && old.sub !== claims.sub) throw new Error('refreshed ID token is for a different subject');
    }
    storeTokens(tok, prev);
  }

  function signout() {
    const t = loadJSON(TOKENS_KEY);
    sessionStorage.clear();
    if (disco && disco.end_session_endpoint) {
      const u = new URL(disco.end_session_endpoint);
      if (t && t.id_token) u.searchParams.set('id_token_hint', t.id_token);
      u.searchParams.set('client_id', cfg.client_id);
      u.searchParams.set('post_logout_redirect_uri', postLogoutRedirectURI());
      location.assign(u.toString());
      return true;
    }
    return false;
  }

  // ---- rendering -----------------------------------------------------------

  async function render() {
    const t = loadJSON(TOKENS_KEY);
    const idClaims = t ? decodeJWTPayload(t.id_token) : null;
    const state = { idClaims: null, atClaims: null, userinfo: null, refreshToken: false };

    if (!idClaims) {
      $('status').textContent = 'signed out';
      $('id-claims').textContent = '';
      $('at-claims').textContent = '';
      $('userinfo').textContent = '';
      $('signout').disabled = true;
      $('refresh').disabled = true;
      window.demoState = state;
      return;
    }

    state.idClaims = idClaims;
    state.refreshToken = Boolean(t.refresh_token);
    $('status').textContent = 'signed in as ' + (idClaims.email || idClaims.sub);
    $('id-claims').textContent = pretty(idClaims);

    if (t.access_token) {
      const at = decodeJWTPayload(t.access_token);
      state.atClaims = at || 'opaque';
      $('at-claims').textContent = at ? pretty(at) : 'opaque';
    } else {
      $('at-claims').textContent = '(no access token)';
    }

    if (disco && disco.userinfo_endpoint && t.access_token) {
      $('userinfo').textContent = 'loading…';
      try {
        state.userinfo = await fetchJSON(disco.userinfo_endpoint, {
          headers: { Authorization: 'Bearer ' + t.access_token, Accept: 'application/json' },
          cache: 'no-store',
        });
        $('userinfo').textContent = pretty(state.userinfo);
      } catch (e) {
        $('userinfo').textContent = 'userinfo failed: ' + e.message;
      }
    } else {
      $('userinfo').textContent = '(no userinfo endpoint or access token)';
    }

    $('signout').disabled = false;
    $('refresh').disabled = !state.refreshToken;
    window.demoState = state;
  }

  // ---- wiring --------------------------------------------------------------

  // action runs fn for a button: ready is cleared while it runs and set again
  // when it finishes (unless it navigated away).
  function action(fn) {
    return async function () {
      setReady(false);
      clearError();
      showMessage('');
      let navigated = false;
      try {
        navigated = (await fn()) === true;
      } catch (e) {
        showError(e);
      }
      if (!navigated) {
        try {
          await render();
        } catch (e) {
          showError(e);
        }
        setReady(true);
      }
    };
  }

  function wire() {
    $('signin').addEventListener('click', action(async function () {
      await authorize({ connection: selectedConnection() });
      return true;
    }));
    $('signup').addEventListener('click', action(async function () {
      await authorize({ connection: selectedConnection(), screen_hint: 'signup' });
      return true;
    }));
    $('refresh').addEventListener('click', action(async function () {
      try {
        await refresh();
      } catch (e) {
        $('refresh-status').textContent = 'refresh failed at ' + new Date().toISOString();
        throw e;
      }
      $('refresh-status').textContent = 'refreshed at ' + new Date().toISOString();
      return false;
    }));
    $('signout').addEventListener('click', action(async function () {
      $('refresh-status').textContent = '';
      return signout();
    }));
  }

  async function main() {
    wire();
    try {
      cfg = await fetchJSON('/config.json', { cache: 'no-store' });
      $('issuer').textContent = cfg.issuer;
      disco = await fetchJSON(joinURL(cfg.issuer, '/.well-known/openid-configuration'));
      if (location.pathname === '/login') {
        if (await handleInitiateLogin(new URLSearchParams(location.search))) return;
      } else if (location.pathname === '/callback') {
        await handleCallback(new URLSearchParams(location.search));
      }
    } catch (e) {
      showError(e);
    }
    try {
      await render();
    } catch (e) {
      showError(e);
    }
    setReady(true);
  }

  main();
})();
