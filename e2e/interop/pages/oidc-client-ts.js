// An SPA using oidc-client-ts unmodified, with usher as its authority. This
// page is its redirect_uri, silent_redirect_uri, post_logout_redirect_uri and
// initiate_login_uri.
(async () => {
  const cfg = window.interopConfig;
  const self = location.origin + location.pathname;
  const state = window.interopState;
  // The SDK's defaults otherwise: code flow with PKCE, scope "openid" (so no
  // refresh token), no userinfo call, automaticSilentRenew through a hidden
  // iframe (prompt=none) answered from usher's session.
  const mgr = new oidc.UserManager({
    authority: cfg.issuer,
    client_id: cfg.clientId,
    redirect_uri: self,
    silent_redirect_uri: self,
    post_logout_redirect_uri: self,
  });

  const record = (user) => ({
    profile: user.profile,
    idClaims: jwtClaims(user.id_token),
    atClaims: jwtClaims(user.access_token),
    refreshToken: user.refresh_token || "",
  });

  const q = new URLSearchParams(location.search);
  if (window.self !== window.top && (q.has("code") || q.has("error"))) {
    // Inside the SDK's hidden iframe: hand the response to the parent.
    try {
      await mgr.signinSilentCallback();
    } catch (e) {
      fail("signinSilentCallback", e);
    }
    return;
  }

  // Every user the SDK stores (sign-in, signinSilent, automatic renewal):
  // the test waits on state.current to see automatic renewals.
  mgr.events.addUserLoaded((user) => {
    state.current = record(user);
    state.loads = (state.loads || 0) + 1;
    render();
  });
  mgr.events.addSilentRenewError((e) => fail("automatic silent renew", e));

  // signinSilent without a refresh token: the hidden iframe.
  window.doRefresh = async () => {
    try {
      state.refreshed = record(await mgr.signinSilent());
    } catch (e) {
      return fail("signinSilent", e);
    }
    render();
  };

  try {
    if (q.has("code") || q.has("error")) {
      const user = await mgr.signinRedirectCallback();
      history.replaceState(null, "", self);
      Object.assign(state, { signedIn: true }, record(user));
    } else if (q.has("iss")) {
      // initiate_login_uri (OIDC Core §4): usher sends iss and login_hint,
      // and an invitation reference to clients that forward it.
      if (q.get("iss") !== cfg.issuer) throw new Error("initiate_login_uri with iss " + q.get("iss"));
      state.redirecting = true;
      render();
      if (setting("forwardInvitation") === "0" || !q.has("invitation")) {
        // The cookie path: the app knows nothing about invitations.
        await mgr.signinRedirect();
      } else {
        await mgr.signinRedirect({ login_hint: q.get("login_hint"), extraQueryParams: { invitation: q.get("invitation") } });
      }
      return;
    } else {
      state.signedIn = false;
    }
    state.loaded = true;
    render();
  } catch (e) {
    fail("oidc-client-ts", e);
  }
})();
