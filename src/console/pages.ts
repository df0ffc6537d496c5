/**
 * The console's two HTML shells, rendered on the Worker with Hono's `html` helper, which
 * escapes every value put into the page: the sign-in form, and the console itself (the
 * signed-in account, the session's CSRF token and whether the key may change things,
 * for the script, /console/console.js, to read). No inline script or style anywhere.
 */
import { html } from "hono/html";

const head = (title: string) => html`<meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <meta name="referrer" content="same-origin" />
    <title>${title}</title>
    <link rel="icon" href="data:," />
    <link rel="stylesheet" href="/console/console.css" />`;

export function signInPage(o: { csrf: string; error?: string | undefined }) {
  return html`<!doctype html>
<html lang="en">
  <head>
    ${head("Sign in · Krafter console")}
  </head>
  <body class="sign-in">
    <main class="card narrow">
      <h1>Krafter console</h1>
      <p>Sign in with an API key (<code>npm run api-key -- create --account NAME --scopes webhooks:read,webhooks:write</code>). A key with <code>webhooks:read</code> only sees everything and changes nothing.</p>
      ${o.error ? html`<p class="error" role="alert" id="sign-in-error">${o.error}</p>` : ""}
      <form method="post" action="/console/sign-in" autocomplete="off">
        <input type="hidden" name="csrf" value="${o.csrf}" />
        <label for="key">API key</label>
        <input id="key" name="key" type="password" required spellcheck="false" autocomplete="off" placeholder="krf_…" />
        <button type="submit" id="sign-in">Sign in</button>
      </form>
      <p class="muted">The key is kept in an HttpOnly cookie for this console only, encrypted; it is never shown again.</p>
    </main>
  </body>
</html>`;
}

export function consolePage(o: { csrf: string; accountName: string; keyPrefix: string; canWrite: boolean }) {
  return html`<!doctype html>
<html lang="en">
  <head>
    ${head("Krafter console")}
    <meta name="krafter-csrf" content="${o.csrf}" />
    <script src="/console/console.js" defer></script>
  </head>
  <body data-can-write="${o.canWrite ? "true" : "false"}">
    <header class="top">
      <a class="brand" href="#/">Krafter</a>
      <span class="who"><span id="account">${o.accountName}</span> · <code>${o.keyPrefix}…</code> · <span id="access">${o.canWrite ? "read and write" : "read only"}</span></span>
      <form method="post" action="/console/sign-out" class="sign-out">
        <input type="hidden" name="csrf" value="${o.csrf}" />
        <button type="submit" id="sign-out">Sign out</button>
      </form>
    </header>
    <nav id="crumbs" aria-label="Breadcrumbs"></nav>
    <main id="view"><p class="muted">Loading…</p></main>
    <noscript><p>The console needs JavaScript; the API works without it (<a href="/docs">/docs</a>).</p></noscript>
  </body>
</html>`;
}
