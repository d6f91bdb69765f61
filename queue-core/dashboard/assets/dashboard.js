// runall dashboard: live refresh of the overview over server-sent events.
//
// The page works without this script (reload for new numbers). With it, the overview opens
// one EventSource on `events` (relative to the page, so the dashboard works under any
// prefix); each `overview` event carries the queues table rendered by the server, which
// replaces the one on the page. The stream is closed while the tab is hidden, so a
// background tab costs the server nothing, and opened again when it is shown.
(function () {
  "use strict";

  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!live || !window.EventSource) {
    return;
  }

  var url = live.getAttribute("data-events") || "events";
  var source = null;

  function say(text, on) {
    if (!status) {
      return;
    }
    status.textContent = text;
    status.className = "live-status " + (on ? "on" : "off");
  }

  function onUpdate(event) {
    // Forms inside the table are replaced too; a click in flight is not lost, as the
    // browser submits the form it started with.
    live.innerHTML = event.data;
    say("Live: updated every second while this tab is open.", true);
  }

  function open() {
    if (source) {
      return;
    }
    source = new EventSource(url);
    source.addEventListener("overview", onUpdate);
    source.onopen = function () {
      say("Live: updated every second while this tab is open.", true);
    };
    source.onerror = function () {
      // The browser reconnects by itself (the server asks for 3 s); say so meanwhile.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        say("Live updates stopped: reload the page.", false);
      } else {
        say("Live updates: reconnecting…", false);
      }
    };
  }

  function close() {
    if (source) {
      source.close();
      source = null;
    }
    say("Live updates paused while the tab is hidden.", false);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      close();
    } else {
      open();
    }
  });

  window.addEventListener("pagehide", close);
  window.addEventListener("pageshow", function () {
    if (!document.hidden) {
      open();
    }
  });

  if (document.hidden) {
    say("Live updates paused while the tab is hidden.", false);
  } else {
    say("Live: connecting…", false);
    open();
  }
}());

// Pages with a part that changes while one looks (a batch that has not finished): the
// element with `data-refresh` (seconds) is fetched again from the page's own URL and
// swapped in place, while the tab is visible and until the new copy has no
// `data-refresh` (the batch has finished). Without JavaScript, a reload does the same.
(function () {
  "use strict";

  function schedule() {
    var part = document.querySelector("[data-refresh]");
    if (!part || !window.fetch || !window.DOMParser) {
      return;
    }
    var every = parseFloat(part.getAttribute("data-refresh")) || 2;
    window.setTimeout(function () {
      if (document.hidden) {
        schedule();
        return;
      }
      window.fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) {
          return response.ok ? response.text() : null;
        })
        .then(function (text) {
          if (text === null) {
            return;
          }
          var fresh = new DOMParser().parseFromString(text, "text/html");
          var next = part.id ? fresh.getElementById(part.id) : null;
          if (next) {
            part.replaceWith(document.importNode(next, true));
            schedule();
          }
        })
        .catch(function () {
          schedule();
        });
    }, every * 1000);
  }

  schedule();
}());
