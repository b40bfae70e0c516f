// tradegraph's example dashboard: plain browser JavaScript, no build step, nothing but
// the public API. Queries and mutations go over HTTP to /graphql; live data comes from
// subscriptions over the graphql-ws protocol, with the graphql-ws library's client
// (loaded before this file as the global `graphqlWs`).
//
// Tokens are kept in memory only: a reload signs out, and no script injected into
// another page of this origin can read them from storage.
(function () {
  'use strict';

  var HTTP_URL = '/graphql';
  var WS_URL = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/graphql';
  // Refresh the access token this long before it expires.
  var REFRESH_MARGIN_MS = 30 * 1000;

  var operations = {};
  var session = null;
  var socket = null;
  var unsubscribers = [];
  var stopTicker = null;

  var $ = function (selector) { return document.querySelector(selector); };

  // ---- talking to the API -------------------------------------------------

  function ApiError(error) {
    this.message = error.message;
    this.code = error.extensions && error.extensions.code;
    this.field = error.extensions && error.extensions.field;
  }
  ApiError.prototype = Object.create(Error.prototype);

  // dashboard.graphql holds every operation; each is sent on its own, by name.
  function loadOperations() {
    return fetch('/dashboard/assets/dashboard.graphql')
      .then(function (response) { return response.text(); })
      .then(function (text) {
        text.split(/\n(?=(?:query|mutation|subscription)\s)/).forEach(function (chunk) {
          var match = /^(query|mutation|subscription)\s+(\w+)/m.exec(chunk);
          if (match) operations[match[2]] = chunk.slice(match.index).trim();
        });
      });
  }

  function post(name, variables, token) {
    var headers = {
      'Content-Type': 'application/json',
      Accept: 'application/graphql-response+json, application/json'
    };
    if (token) headers.Authorization = 'Bearer ' + token;
    return fetch(HTTP_URL, {
      method: 'POST',
      headers: headers,
      body: JSON.stringify({ query: operations[name], operationName: name, variables: variables || {} })
    })
      .then(function (response) { return response.json(); })
      .then(function (body) {
        if (body.errors && body.errors.length) throw new ApiError(body.errors[0]);
        return body.data;
      });
  }

  function freshToken() {
    if (!session) return Promise.resolve(null);
    if (Date.parse(session.expiresAt) - Date.now() > REFRESH_MARGIN_MS) {
      return Promise.resolve(session.accessToken);
    }
    // Refresh tokens rotate: the old one is spent by this call.
    return post('Refresh', { refreshToken: session.refreshToken }).then(function (data) {
      session = data.refreshSession;
      return session.accessToken;
    });
  }

  function gql(name, variables) {
    return freshToken().then(function (token) { return post(name, variables, token); });
  }

  function subscribe(name, variables, onData) {
    var stop = socket.subscribe(
      { query: operations[name], operationName: name, variables: variables || {} },
      {
        next: function (result) {
          if (result.errors && result.errors.length) toast(name + ': ' + result.errors[0].message);
          else onData(result.data);
        },
        error: function (error) { toast(name + ': ' + (error.message || error.reason || 'connection lost')); },
        complete: function () {}
      }
    );
    unsubscribers.push(stop);
    return stop;
  }

  function connect() {
    socket = graphqlWs.createClient({
      url: WS_URL,
      // Called on every (re)connection, so a reconnect uses a fresh token.
      connectionParams: function () {
        return freshToken().then(function (token) { return { authorization: 'Bearer ' + token }; });
      },
      retryAttempts: Infinity,
      shouldRetry: function () { return session !== null; },
      on: {
        connected: function () { setLive(true); },
        closed: function () { setLive(false); }
      }
    });
  }

  // ---- rendering ----------------------------------------------------------

  function text(value) { return value === null || value === undefined ? '–' : String(value); }

  // Decimals arrive as exact strings and are shown as they are; only the sign is read.
  function signed(cell, value) {
    cell.textContent = text(value);
    cell.className = value && value[0] === '-' ? 'down' : value && value !== '0' ? 'up' : '';
  }

  // A ratio such as change24h as a percentage. Display only: the exact value stays a
  // string, and no amount of money is ever turned into a float.
  function percent(ratio) {
    if (ratio === null || ratio === undefined) return '–';
    return (Number(ratio) * 100).toFixed(2) + '%';
  }

  function row(cells) {
    var tr = document.createElement('tr');
    cells.forEach(function (value) {
      var td = document.createElement('td');
      if (value instanceof Node) td.appendChild(value); else td.textContent = text(value);
      tr.appendChild(td);
    });
    return tr;
  }

  function toast(message) {
    var div = document.createElement('div');
    div.className = 'toast';
    div.textContent = message;
    $('#toasts').appendChild(div);
    setTimeout(function () { div.remove(); }, 8000);
  }

  function showError(form, error) {
    var where = form.querySelector('[data-error]');
    if (where) where.textContent = error ? (error.field ? error.field + ': ' : '') + error.message : '';
  }

  function setLive(on) {
    var badge = $('#live');
    badge.textContent = on ? 'live' : 'offline';
    badge.className = 'badge ' + (on ? 'on' : 'off');
  }

  // ---- the panels ---------------------------------------------------------

  function loadMarkets() {
    return gql('Markets').then(function (data) {
      ['#ticket [name=market]', '#alert-form [name=market]', '#ticker-market'].forEach(function (selector) {
        var select = $(selector);
        select.innerHTML = '';
        data.markets.forEach(function (market) {
          var option = document.createElement('option');
          option.textContent = market.symbol;
          select.appendChild(option);
        });
      });
    });
  }

  function refreshPortfolio() {
    return gql('Portfolio', { method: $('#method').value }).then(function (data) {
      var portfolio = data.portfolio;
      $('#total-value').textContent = text(portfolio.totalValue);
      signed($('#unrealized'), portfolio.unrealizedPnl);
      signed($('#realized'), portfolio.realizedPnl);
      var body = $('#positions tbody');
      body.innerHTML = '';
      portfolio.positions.forEach(function (position) {
        var unrealized = document.createElement('span');
        var realized = document.createElement('span');
        signed(unrealized, position.unrealizedPnl);
        signed(realized, position.realizedPnl);
        var tr = row([
          position.asset.symbol, position.quantity, position.available, position.locked,
          position.price === null ? 'unpriced' : position.price, position.value,
          position.allocation, position.costBasis, unrealized, realized
        ]);
        tr.dataset.asset = position.asset.symbol;
        if (position.price === null) tr.classList.add('unpriced');
        body.appendChild(tr);
      });
    });
  }

  function refreshOrders() {
    return gql('OpenOrders').then(function (data) {
      var body = $('#orders tbody');
      body.innerHTML = '';
      data.open.edges.concat(data.partial.edges).forEach(function (edge) {
        var order = edge.node;
        var cancel = document.createElement('button');
        cancel.textContent = 'Cancel';
        cancel.addEventListener('click', function () {
          gql('CancelOrder', { id: order.id }).then(refreshAll, function (error) { toast(error.message); });
        });
        var tr = row([order.market.symbol, order.side, order.type, order.price, order.quantity,
          order.filledQuantity, order.status, cancel]);
        tr.dataset.order = order.id;
        body.appendChild(tr);
      });
    });
  }

  function refreshAlerts() {
    return gql('PriceAlerts').then(function (data) {
      var list = $('#alerts');
      list.innerHTML = '';
      data.priceAlerts.forEach(function (alert) {
        var li = document.createElement('li');
        li.textContent = alert.market + ' ' + alert.condition + ' ' + alert.price + (alert.recurring ? ' (recurring) ' : ' ');
        var remove = document.createElement('button');
        remove.textContent = 'Delete';
        remove.addEventListener('click', function () {
          gql('DeletePriceAlert', { id: alert.id }).then(refreshAlerts);
        });
        li.appendChild(remove);
        list.appendChild(li);
      });
    });
  }

  function refreshAll() {
    return Promise.all([refreshPortfolio(), refreshOrders()]);
  }

  function watchTicker() {
    if (stopTicker) stopTicker();
    var market = $('#ticker-market').value;
    $('#ticker').textContent = '–';
    stopTicker = subscribe('Ticker', { market: market }, function (data) {
      var ticker = data.ticker;
      var line = $('#ticker');
      line.textContent = ticker.market + ' ' + text(ticker.lastPrice) + ' (' + percent(ticker.change24h) + ' 24h, vol ' + text(ticker.volume24h) + ')';
      line.className = 'ticker ' + (ticker.change24h && ticker.change24h[0] === '-' ? 'down' : 'up');
    });
  }

  function goLive() {
    connect();
    subscribe('Fills', {}, function (data) {
      var fill = data.fills;
      var li = document.createElement('li');
      li.textContent = fill.side + ' ' + fill.quantity + ' ' + fill.market.symbol + ' @ ' + fill.price +
        ' (fee ' + fill.fee + ' ' + fill.feeAsset + ', ' + fill.liquidity.toLowerCase() + ')';
      li.dataset.fill = fill.id;
      $('#fills').prepend(li);
      refreshAll();
    });
    subscribe('PortfolioValue', {}, function (data) {
      $('#total-value').textContent = text(data.portfolioValue.value);
    });
    subscribe('AlertTriggered', {}, function (data) {
      var event = data.priceAlertTriggered;
      toast('Alert: ' + event.alert.market + ' is ' + event.alert.condition.toLowerCase() + ' ' +
        event.alert.price + ' (last ' + event.price + ')');
      refreshAlerts();
    });
    watchTicker();
  }

  function orderInput(form) {
    var input = {
      market: form.market.value,
      side: form.side.value,
      type: form.type.value,
      quantity: form.quantity.value.trim()
    };
    if (form.type.value === 'LIMIT') input.price = form.price.value.trim();
    else input.timeInForce = 'IOC';
    return input;
  }

  // ---- wiring -------------------------------------------------------------

  function signedIn(payload) {
    session = payload;
    $('#who').textContent = payload.user.displayName + ' <' + payload.user.email + '>';
    $('#signed-out').hidden = true;
    $('#signed-in').hidden = false;
    $('#sign-out').hidden = false;
    return loadMarkets()
      .then(function () { return Promise.all([refreshAll(), refreshAlerts()]); })
      .then(goLive);
  }

  function signOut() {
    unsubscribers.forEach(function (stop) { stop(); });
    unsubscribers = [];
    stopTicker = null;
    session = null;
    if (socket) socket.dispose();
    location.reload();
  }

  document.addEventListener('DOMContentLoaded', function () {
    loadOperations().then(function () {
      $('#sign-in').addEventListener('submit', function (event) {
        event.preventDefault();
        var form = event.target;
        showError(form, null);
        var input = { email: form.email.value, password: form.password.value };
        if (form.totpCode.value.trim()) input.totpCode = form.totpCode.value.trim();
        post('SignIn', { input: input })
          .then(function (data) { return signedIn(data.login); })
          .catch(function (error) { showError(form, error); });
      });
      $('#sign-out').addEventListener('click', signOut);
      $('#method').addEventListener('change', refreshPortfolio);
      $('#ticker-market').addEventListener('change', watchTicker);
      $('#preview').addEventListener('click', function () {
        var form = $('#ticket');
        showError(form, null);
        gql('PreviewOrder', { input: orderInput(form) }).then(function (data) {
          var p = data.previewOrder;
          $('#ticket-result').textContent = p.accepted
            ? 'Would be ' + p.status + ': fill ' + p.estimatedFillQuantity + (p.estimatedAveragePrice ? ' at ' + p.estimatedAveragePrice : '') +
              ', fee ' + p.estimatedFee + ', holds ' + p.holdAmount + ' ' + p.holdAsset
            : 'Would be rejected: ' + p.rejectReason;
        }, function (error) { showError(form, error); });
      });
      $('#ticket').addEventListener('submit', function (event) {
        event.preventDefault();
        var form = event.target;
        showError(form, null);
        gql('PlaceOrder', { input: orderInput(form) }).then(function (data) {
          var order = data.placeOrder;
          $('#ticket-result').textContent = 'Order ' + order.status + (order.averageFillPrice ? ', filled ' + order.filledQuantity + ' at ' + order.averageFillPrice : '') +
            (order.rejectReason ? ': ' + order.rejectReason : '');
          return refreshAll();
        }, function (error) { showError(form, error); });
      });
      $('#alert-form').addEventListener('submit', function (event) {
        event.preventDefault();
        var form = event.target;
        showError(form, null);
        gql('CreatePriceAlert', {
          input: { market: form.market.value, condition: form.condition.value, price: form.price.value.trim(), recurring: form.recurring.checked }
        }).then(function () { form.price.value = ''; return refreshAlerts(); }, function (error) { showError(form, error); });
      });
    });
  });
})();
