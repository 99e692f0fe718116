// The helpers every script sees (docs/SCRIPTS.md), evaluated in its context before its code.
//
// quickjs cannot call into Python while a time limit is set, and every hook runs under one:
// so helpers never call Python. They check their arguments (a TypeError for a wrong call, which
// the script may catch), do what can be done here (tags on the entry object, kfl), and queue
// an action; the hub drains the queue after each call and carries the actions out.
var env = {};
Object.defineProperty(globalThis, "__kfl", {value: __kfl, writable: false, configurable: false});
Object.defineProperty(globalThis, "__shark", {writable: false, configurable: false, value: (function () {
  "use strict";
  var KFL = __kfl;
  // Captured before the script runs: a script that replaces JSON's functions changes its own
  // JSON, not what the helpers hand the hub (which the hub checks anyway: hub/scripts/wire.py).
  var stringify = JSON.stringify.bind(JSON), parse = JSON.parse.bind(JSON);
  var MAX_ACTIONS = 1000;      // per hook call; more are dropped and counted
  var MAX_TEXT = 64 * 1024;    // a log line, a webhook body
  var TAG = /^[A-Za-z0-9][A-Za-z0-9_.:\/-]{0,63}$/;
  var CRON_FIELD = /^[0-9A-Za-z*\/,\-?LW#]+$/;
  var METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"];
  var queue = [], dropped = 0, scriptName = "", snapshots = 0;
  var jobTable = {};

  function push(action) {
    if (queue.length >= MAX_ACTIONS) { dropped++; return; }
    queue.push(action);
  }

  function describe(value) {
    if (value === null) return "null";
    if (Array.isArray(value)) return "an array";
    return typeof value === "object" ? "an object" : typeof value + " " + String(value).slice(0, 40);
  }

  function fail(helper, message) { throw new TypeError(helper + ": " + message); }

  function text(args) {
    var parts = [];
    for (var i = 0; i < args.length; i++) {
      var a = args[i];
      if (typeof a === "string") { parts.push(a); continue; }
      try {
        parts.push(a === undefined ? "undefined" : (typeof a === "object" || typeof a === "string" ? stringify(a) : String(a)));
      } catch (error) {
        parts.push(String(a));   // a cyclic object
      }
    }
    var line = parts.join(" ");
    return line.length > MAX_TEXT ? line.slice(0, MAX_TEXT) + "… (" + line.length + " characters)" : line;
  }

  function entryId(helper, entry) {
    if (entry === null || typeof entry !== "object" || typeof entry.id !== "string" || !/^.+:[0-9]+$/.test(entry.id)) {
      fail(helper, "expected an entry (an object with an id like \"node-a:42\"), got " + describe(entry));
    }
    return entry.id;
  }

  function checkTag(helper, tag) {
    if (typeof tag !== "string" || !TAG.test(tag)) {
      fail(helper, "a tag is 1-64 letters, digits and _ . : / - starting with a letter or digit, got " + describe(tag));
    }
  }

  function retag(helper, entry, add, remove) {
    var id = entryId(helper, entry);
    add.forEach(function (t) { checkTag(helper, t); });
    remove.forEach(function (t) { checkTag(helper, t); });
    var tags = Array.isArray(entry.tags) ? entry.tags.filter(function (t) { return remove.indexOf(t) < 0; }) : [];
    add.forEach(function (t) { if (tags.indexOf(t) < 0) tags.push(t); });
    entry.tags = tags;
    push({t: "tag", id: id, add: add, remove: remove});
    return entry;
  }

  function httpUrl(helper, url) {
    if (typeof url !== "string" || !/^https?:\/\/[^\/\s]+/.test(url)) {
      fail(helper, "expected an http:// or https:// URL, got " + describe(url));
    }
    return url;
  }

  function body(helper, value) {
    if (value === undefined || value === null) return {body: "", type: ""};
    if (typeof value === "string") return {body: value, type: "text/plain; charset=utf-8"};
    if (typeof value === "object") {
      var json;
      try { json = stringify(value); } catch (error) { fail(helper, "the body cannot be made JSON: " + error.message); }
      return {body: json, type: "application/json"};
    }
    return {body: String(value), type: "text/plain; charset=utf-8"};
  }

  function kflQuery(helper, query) {
    if (typeof query !== "string") fail(helper, "expected a KFL query (a string), got " + describe(query));
    try {
      return KFL.compile(query);
    } catch (error) {
      if (error instanceof KFL.KflError) throw new SyntaxError(helper + ": invalid KFL query: " + error.toString());
      throw error;
    }
  }

  function checkName(helper, name) {
    if (typeof name !== "string" || !name.length || name.length > 100) fail(helper, "expected a job name (a string of 1-100 characters), got " + describe(name));
  }

  globalThis.console = {
    log: function () { push({t: "log", level: "info", text: text(arguments)}); },
    info: function () { push({t: "log", level: "info", text: text(arguments)}); },
    debug: function () { push({t: "log", level: "info", text: text(arguments)}); },
    warn: function () { push({t: "log", level: "warn", text: text(arguments)}); },
    error: function () { push({t: "log", level: "error", text: text(arguments)}); }
  };

  globalThis.test = {
    pass: function (entry) {
      if (arguments.length !== 1) fail("test.pass", "expected one argument (the entry), got " + arguments.length);
      return retag("test.pass", entry, ["test.pass"], ["test.fail"]);
    },
    fail: function (entry) {
      if (arguments.length !== 1) fail("test.fail", "expected one argument (the entry), got " + arguments.length);
      return retag("test.fail", entry, ["test.fail"], ["test.pass"]);
    },
    tag: function (entry, tag) {
      if (arguments.length !== 2) fail("test.tag", "expected two arguments (the entry and a tag), got " + arguments.length);
      return retag("test.tag", entry, [tag], []);
    },
    untag: function (entry, tag) {
      if (arguments.length !== 2) fail("test.untag", "expected two arguments (the entry and a tag), got " + arguments.length);
      return retag("test.untag", entry, [], [tag]);
    }
  };

  globalThis.kfl = {
    match: function (query, entry) {
      if (arguments.length !== 2) fail("kfl.match", "expected two arguments (a KFL query and an entry), got " + arguments.length);
      var test = kflQuery("kfl.match", query);
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) fail("kfl.match", "expected an entry (an object), got " + describe(entry));
      return test(entry);
    },
    validate: function (query) {
      if (typeof query !== "string") fail("kfl.validate", "expected a KFL query (a string), got " + describe(query));
      return KFL.check(query).valid;
    },
    // {valid, error, column}: what is wrong with a query and where
    check: function (query) {
      if (typeof query !== "string") fail("kfl.check", "expected a KFL query (a string), got " + describe(query));
      return KFL.check(query);
    }
  };

  globalThis.vendor = {
    webhook: function (method, url, payload) {
      if (typeof method !== "string" || METHODS.indexOf(method.toUpperCase()) < 0) {
        fail("vendor.webhook", "method: expected one of " + METHODS.join(", ") + ", got " + describe(method));
      }
      httpUrl("vendor.webhook", url);
      var b = body("vendor.webhook", payload);
      if (b.body.length > MAX_TEXT * 16) fail("vendor.webhook", "the body is " + b.body.length + " characters; at most " + MAX_TEXT * 16);
      push({t: "webhook", method: method.toUpperCase(), url: url, body: b.body, type: b.type});
    },
    slack: function (webhookUrl, message) {
      if (arguments.length !== 2) fail("vendor.slack", "expected two arguments (a Slack webhook URL and the text), got " + arguments.length);
      httpUrl("vendor.slack", webhookUrl);
      if (typeof message !== "string") fail("vendor.slack", "text: expected a string, got " + describe(message));
      push({t: "slack", url: webhookUrl, text: message.slice(0, MAX_TEXT)});
    }
  };

  globalThis.pcap = {
    snapshot: function (query) {
      if (query === undefined) query = "";
      kflQuery("pcap.snapshot", query);
      snapshots++;
      var stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "");
      var name = scriptName + "-" + stamp + "-" + snapshots + ".pcap";
      push({t: "snapshot", query: query, name: name});
      return name;
    }
  };

  globalThis.hub = {
    action: function (action, data) {
      if (typeof action !== "string" || !action.length) fail("hub.action", "expected an action name (a string), got " + describe(action));
      var json;
      try { json = stringify(data === undefined ? null : data); } catch (error) { fail("hub.action", "data cannot be made JSON: " + error.message); }
      push({t: "action", action: action, data: json});
    }
  };

  globalThis.jobs = {
    schedule: function (name, cron, fn) {
      checkName("jobs.schedule", name);
      if (typeof cron !== "string") fail("jobs.schedule", "expected a cron expression (a string like \"*/5 * * * *\"), got " + describe(cron));
      var fields = cron.trim().split(/\s+/);
      if ((fields.length !== 5 && fields.length !== 6) || !fields.every(function (f) { return CRON_FIELD.test(f); })) {
        fail("jobs.schedule", "cron: expected 5 fields (minute hour day month weekday, optionally seconds as a 6th), got " + stringify(cron));
      }
      if (typeof fn !== "function") fail("jobs.schedule", "expected a function to run, got " + describe(fn));
      jobTable[name] = {cron: cron, fn: fn};
      push({t: "job", op: "schedule", name: name, cron: cron});
    },
    remove: function (name) {
      checkName("jobs.remove", name);
      if (!Object.prototype.hasOwnProperty.call(jobTable, name)) return false;
      delete jobTable[name];
      push({t: "job", op: "remove", name: name});
      return true;
    },
    list: function () {
      return Object.keys(jobTable).map(function (name) { return {name: name, cron: jobTable[name].cron}; });
    },
    run: function (name) {
      checkName("jobs.run", name);
      if (!Object.prototype.hasOwnProperty.call(jobTable, name)) fail("jobs.run", "no job named " + stringify(name));
      return jobTable[name].fn();
    }
  };

  function drain(result) {
    var out = {actions: queue, dropped: dropped};
    if (result !== undefined) out.result = result;
    queue = [];
    dropped = 0;
    return stringify(out);
  }

  return {
    init: function (config) {
      var c = parse(config);
      scriptName = c.name;
      KFL.configure(c.kfl.fields, c.kfl.protocols, c.kfl.helpers, c.kfl.aliases, c.kfl.protocol_aliases, c.kfl.functions,
                    c.kfl.endpoint_fields, c.kfl.absent);
      env = Object.freeze(c.env);
      globalThis.env = env;
    },
    // Calls hook(...args); null when there is nothing to report, else {actions, dropped}.
    call: function (hook, args) {
      var fn = globalThis[hook];
      if (typeof fn !== "function") return null;
      fn.apply(null, parse(args));
      return queue.length || dropped ? drain(undefined) : null;
    },
    // onItemQueried: the entry as the hook left it (or what it returned) in `result`.
    query: function (entry) {
      var fn = globalThis.onItemQueried, item = parse(entry);
      var returned = fn(item);
      // Another object replaces the entry only if it is that entry (the same id).
      var kept = returned !== null && typeof returned === "object" && returned.id === item.id ? returned : item;
      return drain(stringify(kept));
    },
    job: function (name) {
      if (!Object.prototype.hasOwnProperty.call(jobTable, name)) return drain(undefined);
      jobTable[name].fn();
      return drain(undefined);
    },
    // The hub refused a job's cron expression: forget the job.
    unschedule: function (name) { delete jobTable[name]; },
    // What a failed call queued before it failed (the hub still carries it out).
    drain: function () { return queue.length || dropped ? drain(undefined) : null; },
    jobs: function () { return stringify(globalThis.jobs.list()); }
  };
})()});
