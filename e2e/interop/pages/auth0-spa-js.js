// An SPA written for Auth0's SPA SDK, unmodified but for `domain`, which
// names usher. This page is its redirect_uri, returnTo and initiate_login_uri.
(async () => {
  const cfg = window.interopConfig;
  const self = location.origin + location.pathname;
  const state = window.interopState;
  let client;

  window.doLogin = () => client.loginWithRedirect();
  window.doRefresh = async () => {
    try {
      // cacheMode off: skip the cache; with the SDK's defaults (no refresh
      // tokens) a new token comes through the hidden iframe, with
      // refreshTokens from the refresh_token grant.
      const r = await client.getTokenSilently({ cacheMode: "off", detailedResponse: true });
      state.refreshed = { atClaims: jwtClaims(r.access_token), idClaims: { ...(await client.getIdTokenClaims()) } };
      delete state.refreshed.idClaims.__raw;
    } catch (e) {
      return fail("getTokenSilently", e);
    }
    render();
  };
  window.doLogout = () => client.logout({ logoutParams: { returnTo: self } });

  try {
    const options = {
      domain: cfg.domain,
      clientId: cfg.clientId,
      authorizationParams: { redirect_uri: self },
      // Every other option at its default: no refresh tokens, an in-memory
      // cache, so a reload restores the session through the SDK's hidden
      // iframe (prompt=none, response_mode=web_message) from usher's session.
    };
    if (setting("refreshTokens") === "1") {
      // An app on another site than usher, as the README advises it: refresh
      // tokens (the SDK asks offline_access) kept in localStorage, and no
      // iframe to fall back on.
      Object.assign(options, { useRefreshTokens: true, useRefreshTokensFallback: false, cacheLocation: "localstorage" });
    }
    client = await auth0.createAuth0Client(options);
    const q = new URLSearchParams(location.search);
    if (q.has("code") || q.has("error")) {
      await client.handleRedirectCallback();
      history.replaceState(null, "", self);
      const idClaims = { ...(await client.getIdTokenClaims()) };
      delete idClaims.__raw;
      Object.assign(state, {
        signedIn: await client.isAuthenticated(),
        user: await client.getUser(),
        idClaims,
        atClaims: jwtClaims(await client.getTokenSilently()),
      });
    } else if (q.has("iss")) {
      // initiate_login_uri: forward the invitation (a reference, when usher
      // sends one) as Auth0 apps forward their own `invitation`
      // (organizations) parameter.
      state.redirecting = true;
      render();
      const params = { login_hint: q.get("login_hint") };
      if (q.has("invitation") && setting("forwardInvitation") !== "0") params.invitation = q.get("invitation");
      if (setting("screenHint")) params.screen_hint = setting("screenHint");
      await client.loginWithRedirect({ authorizationParams: params });
      return;
    } else {
      state.signedIn = await client.isAuthenticated();
      if (state.signedIn) {
        state.user = await client.getUser();
        state.idClaims = { ...(await client.getIdTokenClaims()) };
        delete state.idClaims.__raw;
      }
    }
    state.loaded = true;
    render();
  } catch (e) {
    fail("auth0-spa-js", e);
  }
})();
