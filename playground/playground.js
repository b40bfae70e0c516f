// Starts GraphiQL on /playground with a fetcher that speaks tradegraph's
// dialect of GraphQL over HTTP and over WebSocket.
//
// It lives in a file of its own (not inline in index.html) so that the page's
// Content-Security-Policy can forbid inline script. React, ReactDOM and
// GraphiQL come from the UMD bundles loaded before it; the example tabs come
// from examples.js, which build.rs generates from playground/*.graphql.
(function () {
  'use strict';

  var HTTP_URL = '/graphql';
  // Same origin as the page, and wss: exactly when the page came over https:,
  // so the playground works behind a TLS-terminating proxy without settings.
  var WS_URL =
    (window.location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + window.location.host + '/graphql';
  // GraphQL-over-HTTP: prefer the spec's media type (real HTTP status codes)
  // but accept the legacy one from older servers.
  var ACCEPT = 'application/graphql-response+json, application/json';

  // Kept narrower than the editor at common window sizes.
  var WELCOME = [
    '# Welcome to the tradegraph GraphQL playground.',
    '#',
    '# To act as a user:',
    '#  1. In the "Register" tab (it also holds Login,',
    '#     Me, Sessions, ...), edit the Variables pane,',
    '#     then run Register or Login from the run',
    '#     button\'s menu.',
    '#  2. Copy "accessToken" from the response.',
    '#  3. In the Headers pane below, paste',
    '#       {"Authorization": "Bearer <accessToken>"}',
    '#     (for an API key: {"X-API-Key": "<secret>"}).',
    '#',
    '# Queries and mutations then send those headers;',
    '# subscriptions (a WebSocket on /graphql) send',
    '# them in connection_init. Tokens expire: run',
    '# RefreshSession with the refreshToken for new ones.',
    '# Headers are not saved in this browser unless you',
    '# turn that on in the settings (gear icon), where',
    '# "Clear storage" also brings back these tabs.',
    '#',
    '# A subscription to try (public, no token needed):',
    '#   subscription { serverTime(intervalSeconds: 1) }',
    '#',
    '# Ctrl-Enter runs the operation under the cursor,',
    '# Ctrl-Space completes, and the book icon on the',
    '# left opens the schema documentation.',
    '',
    'query Welcome {',
    '  serverTime',
    '}',
    '',
  ].join('\n');

  function showError(message) {
    var root = document.getElementById('graphiql');
    if (!root) {
      return;
    }
    var box = document.createElement('div');
    box.className = 'tg-message';
    var p = document.createElement('p');
    p.className = 'tg-error';
    p.textContent = message;
    box.appendChild(p);
    root.replaceChildren(box);
  }

  // Header names are case-insensitive, and users type them either way.
  function findHeader(headers, name) {
    var wanted = name.toLowerCase();
    for (var key in headers) {
      if (Object.prototype.hasOwnProperty.call(headers, key) && key.toLowerCase() === wanted) {
        var value = headers[key];
        return value === null || value === undefined ? undefined : String(value);
      }
    }
    return undefined;
  }

  // The server authenticates a WebSocket by its connection_init payload, not
  // by HTTP headers (browsers cannot set those on a WebSocket), and it expects
  // the keys `authorization` and `apiKey`, so the editor's headers are mapped
  // rather than passed through.
  function connectionParams(headers) {
    var params = {};
    var authorization = findHeader(headers, 'authorization');
    if (authorization !== undefined) {
      params.authorization = authorization;
    }
    var apiKey = findHeader(headers, 'x-api-key');
    if (apiKey !== undefined) {
      params.apiKey = apiKey;
    }
    return params;
  }

  // The same rule as GraphiQL's own fetcher: the operation to run is the one
  // named operationName, or the anonymous one.
  function isSubscription(document, operationName) {
    var wanted = operationName || undefined;
    return document.definitions.some(function (definition) {
      return (
        definition.kind === 'OperationDefinition' &&
        definition.operation === 'subscription' &&
        (definition.name ? definition.name.value : undefined) === wanted
      );
    });
  }

  function parseOrNull(query) {
    try {
      return window.GraphiQL.GraphQL.parse(query);
    } catch (_error) {
      return null;
    }
  }

  async function postOverHttp(params, headers) {
    var requestHeaders = new Headers();
    for (var key in headers) {
      if (!Object.prototype.hasOwnProperty.call(headers, key)) {
        continue;
      }
      var lower = key.toLowerCase();
      if (lower === 'accept' || lower === 'content-type') {
        continue;
      }
      requestHeaders.set(key, String(headers[key]));
    }
    requestHeaders.set('Accept', ACCEPT);
    requestHeaders.set('Content-Type', 'application/json');

    var response = await fetch(HTTP_URL, {
      method: 'POST',
      headers: requestHeaders,
      body: JSON.stringify(params),
      credentials: 'same-origin',
    });
    var text = await response.text();
    try {
      // application/graphql-response+json answers errors with a 4xx status
      // and a normal GraphQL body, which GraphiQL should show as is.
      return JSON.parse(text);
    } catch (_error) {
      throw new Error(
        'POST ' + HTTP_URL + ' answered HTTP ' + response.status + ' ' + response.statusText +
          ' without a GraphQL JSON body' + (text ? ':\n' + text.slice(0, 2000) : '.'),
      );
    }
  }

  function fetcher(params, opts) {
    var headers = (opts && opts.headers) || {};
    var document = (opts && opts.documentAST) || parseOrNull(params.query);
    if (document && isSubscription(document, params.operationName)) {
      // A new graphql-ws client per subscription, so connection_init always
      // carries the headers as they are now, not as they were when the page
      // loaded. The client connects lazily and closes its socket when the
      // subscription ends, so nothing lingers. Headers are deliberately not
      // passed on: GraphiQL would merge them verbatim into the payload.
      var wsFetcher = window.GraphiQL.createFetcher({
        url: HTTP_URL,
        subscriptionUrl: WS_URL,
        wsConnectionParams: connectionParams(headers),
      });
      return wsFetcher(params, { documentAST: document });
    }
    return postOverHttp(params, headers);
  }

  function exampleTabs() {
    var examples = Array.isArray(window.TRADEGRAPH_PLAYGROUND_EXAMPLES)
      ? window.TRADEGRAPH_PLAYGROUND_EXAMPLES
      : [];
    return examples.map(function (example) {
      return { query: example.query, variables: example.variables || null };
    });
  }

  function start() {
    if (!window.React || !window.ReactDOM || !window.GraphiQL) {
      showError(
        'GraphiQL did not load (React, ReactDOM or GraphiQL is missing). ' +
          'Reload the page; if that does not help, rebuild the server with Node.js and npm installed.',
      );
      return;
    }
    var root = window.ReactDOM.createRoot(document.getElementById('graphiql'));
    root.render(
      window.React.createElement(window.GraphiQL, {
        fetcher: fetcher,
        defaultQuery: WELCOME,
        // Used only on a first visit: afterwards GraphiQL restores the tabs
        // the user left. "Clear storage" in the settings (gear icon) brings these
        // back.
        defaultTabs: [{ query: WELCOME }].concat(exampleTabs()),
        defaultEditorToolsVisibility: 'headers',
        isHeadersEditorEnabled: true,
        // Tokens stay out of localStorage unless the user opts in.
        shouldPersistHeaders: false,
        storage: window.GraphiQL.createLocalStorage({ namespace: 'tradegraph-playground' }),
      }),
    );
  }

  try {
    start();
  } catch (error) {
    showError('The playground failed to start: ' + (error && error.message ? error.message : String(error)));
  }
})();
