// KFL (docs/KFL.md) inside a script's JavaScript context, for kfl.match() and kfl.validate().
//
// Why a second implementation: quickjs refuses calls from JS into Python while a time limit
// is set, and every hook runs under one, so a helper that must answer at once cannot ask
// shark.kfl. This file follows shark/kfl (grammar.py, parser.py, compiler.py) rule for rule;
// tests/unit/test_scripts_kfl.py runs both on the documented queries, the invalid ones and
// random ones and requires the same answers. The lists of fields, protocols and helpers come
// from shark.kfl at load time (__kfl.configure), so they cannot drift.
//
// Regexes are RE2 in KFL (shark/regex.py: linear time). JavaScript's RegExp backtracks, so
// they run with re2.js, loaded before this file: RE2's syntax, refusals and error texts, and a
// matcher linear in the text.
var __kfl = (function () {
  "use strict";
  var FIELDS = [], PROTOCOLS = [], HELPERS = {}, ALIASES = {}, PROTOCOL_ALIASES = {}, FUNCTIONS = {}, ENDPOINT_FIELDS = [], ABSENT = {};
  var KEYWORDS = {and: 1, or: 1, not: 1, "in": 1, "true": 1, "false": 1, "null": 1};
  var MAX_QUERY_LENGTH = 10000, MAX_DEPTH = 64, MAX_INT_DIGITS = 4300;

  function KflError(message, column) {
    this.message = message;
    this.column = column;
  }
  KflError.prototype.toString = function () { return "column " + this.column + ": " + this.message; };

  function has(object, key) { return Object.prototype.hasOwnProperty.call(object, key); }
  function isDict(v) { return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Regex); }

  // -- lexer --------------------------------------------------------------------------------
  var PUNCT = {"(": "LPAR", ")": "RPAR", "[": "LSQB", "]": "RSQB", ".": "DOT", ",": "COMMA"};
  var NUMBER_RE = /-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/y;
  var NAME_RE = /[A-Za-z_][A-Za-z0-9_]*/y;

  function quoted(text, at) {
    // end index (exclusive) of a quoted literal starting at `at` (the quote), or -1
    var quote = text[at], i = at + 1;
    while (i < text.length) {
      var c = text[i];
      if (c === "\\") { i += 2; continue; }
      if (c === quote) return i + 1;
      i++;
    }
    return -1;
  }

  function tokenize(text, from) {
    var tokens = [], i = from || 0, n = text.length, m;
    while (i < n) {
      var c = text[i];
      if (c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f") { i++; continue; }
      var start = i, type = null, end = -1;
      if (c === "r" && (text[i + 1] === '"' || text[i + 1] === "'")) {
        end = quoted(text, i + 1);
        if (end < 0) throw new KflError("unterminated string: no closing quote", i + 1);
        type = "REGEX";
      } else if (c === '"' || c === "'") {
        end = quoted(text, i);
        if (end < 0) throw new KflError("unterminated string: no closing quote", i + 1);
        type = "STRING";
      } else if ((c === "+" || c === "-") && (c === "+" || operandEnded(tokens))) {
        end = i + 1; type = "ADDOP";   // as lark's contextual lexer: after an operand '-' subtracts
      } else if (((c >= "0" && c <= "9") || c === "." || c === "-") && (NUMBER_RE.lastIndex = i, m = NUMBER_RE.exec(text))) {
        end = i + m[0].length; type = "NUMBER";
      } else if ((NAME_RE.lastIndex = i, m = NAME_RE.exec(text))) {
        end = i + m[0].length; type = "NAME";
      } else if ((c === "=" || c === "!" || c === "<" || c === ">") && text[i + 1] === "=") {
        end = i + 2; type = "CMP";
      } else if (c === "<" || c === ">") {
        end = i + 1; type = "CMP";
      } else if (c === "!") {
        end = i + 1; type = "BANG";
      } else if (c === "&" && text[i + 1] === "&") {
        end = i + 2; type = "AND";
      } else if (c === "|" && text[i + 1] === "|") {
        end = i + 2; type = "OR";
      } else if (has(PUNCT, c)) {
        end = i + 1; type = PUNCT[c];
      }
      if (type === null) {
        tokens.push({type: "BAD", value: c, start: i, end: i + 1});
        return tokens;
      }
      tokens.push({type: type, value: text.slice(start, end), start: start, end: end});
      i = end;
    }
    return tokens;
  }

  function operandEnded(tokens) {
    var last = tokens[tokens.length - 1];
    if (!last) return false;
    if (last.type === "NAME") return !/^(and|or|not|in)$/.test(last.value);
    return /^(NUMBER|STRING|REGEX|RPAR|RSQB)$/.test(last.type);
  }

  // -- parser: text -> tree -----------------------------------------------------------------
  function Parser(text) {
    this.text = text;
    this.tokens = tokenize(text);
    this.pos = 0;
  }
  Parser.prototype.peek = function () { return this.tokens[this.pos] || null; };
  Parser.prototype.next = function () { return this.tokens[this.pos++]; };
  Parser.prototype.fail = function (expected) {
    var token = this.peek(), before = this.tokens[this.pos - 1] || null, column, got;
    if (token === null) {
      column = before !== null ? before.end + 1 : this.text.length + 1;
      got = "end of query";
    } else {
      column = token.start + 1;
      var value = token.value.length > 40 ? token.value.slice(0, 37) + "..." : token.value;
      got = "'" + value + "'";
      if (token.type === "BAD") {
        got += {"=": " (compare with '==')", "&": " (write 'and' or '&&')", "|": " (write 'or' or '||')",
                "?": " (KFL has no ternary '? :'; write (c and a) or (not c and b))"}[token.value] || "";
      }
    }
    throw new KflError("expected " + expected + (before ? " after '" + before.value + "'" : "") + ", got " + got, column);
  };
  // A keyword where a value stands ("x == in", "a and or b"): blame the keyword.
  Parser.prototype.keywordError = function (keyword) {
    var previous = this.tokens[this.pos - 1] || null;
    if (previous === null || /^(AND|OR|BANG|LPAR)$/.test(previous.type) ||
        (previous.type === "NAME" && /^(and|or|not)$/.test(previous.value) && previous.keyword)) {
      throw new KflError("expected an expression" + (previous ? " after '" + previous.value + "'" : "") +
                         ", got the keyword '" + keyword.value + "'", keyword.start + 1);
    }
    throw new KflError("expected a value, got the keyword '" + keyword.value + "'", keyword.start + 1);
  };
  // Where an operator stands a name cannot, so (as lark's contextual lexer does) "andx" there
  // is the keyword "and" followed by "x".
  Parser.prototype.opWord = function (word) {
    var token = this.peek();
    if (token === null || token.type !== "NAME" || token.value.slice(0, word.length) !== word) return false;
    if (token.value.length > word.length) {
      var head = {type: "NAME", value: word, start: token.start, end: token.start + word.length};
      this.tokens = this.tokens.slice(0, this.pos).concat([head], tokenize(this.text, head.end));
    }
    return true;
  };
  Parser.prototype.operatorAhead = function () {
    var token = this.peek();
    return token !== null && (token.type === "OR" || token.type === "AND" || this.opWord("and") || this.opWord("or"));
  };
  Parser.prototype.parse = function () {
    var tree = this.orExpr(1, null);
    if (this.peek() !== null) this.fail(this.after(tree, null));
    return tree;
  };
  // What may follow a finished operand: the words of parser.describe_expected.
  Parser.prototype.after = function (node, closer) {
    var parts = [];
    if (node.comparable) parts.push("a comparison (== != < <= > >= in)");
    parts.push("'and'", "'or'");
    parts.push(closer === null ? "end of query" : "'" + closer + "'");
    return parts.slice(0, -1).join(", ") + " or " + parts[parts.length - 1];
  };
  Parser.prototype.orExpr = function (depth, closer) {
    var items = [this.andExpr(depth, closer)];
    while (this.peek() !== null && (this.peek().type === "OR" || this.opWord("or"))) {
      this.next().keyword = true;
      items.push(this.andExpr(depth, closer));
    }
    return items.length === 1 ? items[0] : {k: "or", items: items};
  };
  Parser.prototype.andExpr = function (depth, closer) {
    var items = [this.notExpr(depth, closer)];
    while (this.peek() !== null && (this.peek().type === "AND" || this.opWord("and"))) {
      this.next().keyword = true;
      items.push(this.notExpr(depth, closer));
    }
    return items.length === 1 ? items[0] : {k: "and", items: items};
  };
  Parser.prototype.notExpr = function (depth, closer) {
    var token = this.peek();
    if (token !== null && (token.type === "BANG" || (token.type === "NAME" && token.value === "not"))) {
      this.next().keyword = true;
      if (depth > MAX_DEPTH) throw new KflError("the query nests deeper than " + MAX_DEPTH + " levels", token.start + 1);
      return {k: "not", e: this.notExpr(depth + 1, closer), col: token.start + 1};
    }
    return this.comparison(depth, closer);
  };
  // `a + b - c` after its first operand (called after operand() returns: no deeper stack,
  // whose depth quickjs limits)
  Parser.prototype.sum = function (node, depth) {
    while (this.peek() !== null && this.peek().type === "ADDOP") {
      var op = this.next();
      node = {k: "arith", op: op.value, l: node, r: this.operand(depth, "a value"), col: node.col, comparable: true};
    }
    return node;
  };
  Parser.prototype.comparison = function (depth, closer) {
    var left = this.sum(this.operand(depth, "an expression"), depth);
    var token = this.peek();
    if (token !== null && (token.type === "CMP" || this.opWord("in"))) {
      token = this.next();
      var right = this.sum(this.operand(depth, "a value"), depth);
      var node = token.type === "CMP" ? {k: "cmp", op: token.value, l: left, r: right} : {k: "in", l: left, r: right};
      var after = this.peek();
      if (after !== null && after.type !== "RPAR" && !this.operatorAhead()) {
        this.fail("'and', 'or' or " + (closer === null ? "end of query" : "'" + closer + "'"));
      }
      return node;
    }
    if (token !== null && token.type !== "RPAR" && !this.operatorAhead()) {
      this.fail(this.after({comparable: true}, closer));
    }
    if (token !== null && token.type === "RPAR" && closer === null) this.fail(this.after({comparable: true}, null));
    return left;
  };
  Parser.prototype.operand = function (depth, what) {
    if (depth > MAX_DEPTH) {
      var at = this.peek();
      throw new KflError("the query nests deeper than " + MAX_DEPTH + " levels", at ? at.start + 1 : 1);
    }
    var token = this.peek();
    if (token === null || token.type === "BAD") this.fail(what);
    if (token.type === "LPAR") {
      this.next();
      var inner = this.orExpr(depth + 1, ")");
      var close = this.peek();
      if (close === null || close.type !== "RPAR") this.fail(this.after({comparable: inner.k !== "cmp" && inner.k !== "in" && inner.k !== "and" && inner.k !== "or" && inner.k !== "not"}, ")"));
      this.next();
      return {k: "group", e: inner, col: token.start + 1};
    }
    if (token.type === "LSQB") {
      this.next();
      var items = [];
      if (this.peek() !== null && this.peek().type === "RSQB") {
        this.next();
      } else {
        for (;;) {
          items.push(this.operand(depth + 1, "a value"));
          var sep = this.peek();
          if (sep !== null && sep.type === "COMMA") { this.next(); continue; }
          if (sep !== null && sep.type === "RSQB") { this.next(); break; }
          this.fail("',' or ']'");
        }
      }
      return {k: "list", items: items, col: token.start + 1};
    }
    if (token.type === "STRING") { this.next(); return {k: "str", token: token, col: token.start + 1}; }
    if (token.type === "REGEX") { this.next(); return {k: "re", token: token, col: token.start + 1}; }
    if (token.type === "NUMBER") { this.next(); return {k: "num", token: token, col: token.start + 1}; }
    if (token.type === "NAME") {
      if (token.value === "true" || token.value === "false") { this.next(); return {k: "bool", v: token.value === "true", col: token.start + 1}; }
      if (token.value === "null") { this.next(); return {k: "null", col: token.start + 1}; }
      if (token.value === "not" || token.value === "and" || token.value === "or" || token.value === "in") {
        this.keywordError(token);
      }
      this.next();
      if (this.peek() !== null && this.peek().type === "LPAR") {   // now(), map_get(m, k, d)
        var lpar = this.next();
        return this.postfix({k: "func", name: token.value, col: token.start + 1, lpar: lpar.start + 1,
                             args: this.args(depth), comparable: true}, depth);
      }
      return this.postfix({k: "field", name: token.value, col: token.start + 1, comparable: true}, depth);
    }
    this.fail(what);
  };
  // The arguments after a '(' up to its ')'.
  Parser.prototype.args = function (depth) {
    var args = [];
    if (this.peek() !== null && this.peek().type === "RPAR") {
      this.next();
      return args;
    }
    if (this.peek() === null || this.peek().type === "BAD") this.fail("a value or ')'");
    for (;;) {
      args.push(this.operand(depth + 1, "a value"));
      var sep = this.peek();
      if (sep !== null && sep.type === "COMMA") { this.next(); continue; }
      if (sep !== null && sep.type === "RPAR") { this.next(); return args; }
      this.fail("',' or ')'");
    }
  };
  Parser.prototype.postfix = function (node, depth) {
    for (;;) {
      var token = this.peek();
      if (token === null) return node;
      if (token.type === "DOT") {
        this.next();
        var name = this.peek();
        if (name === null || name.type !== "NAME") this.fail("a name");
        this.next();
        depth++;
        if (depth > MAX_DEPTH) throw new KflError("the query nests deeper than " + MAX_DEPTH + " levels", name.start + 1);
        if (this.peek() !== null && this.peek().type === "LPAR") {
          var lpar = this.next(), args = this.args(depth);
          node = {k: "call", obj: node, name: name.value, nameCol: name.start + 1, lpar: lpar.start + 1, args: args, comparable: true};
        } else {
          node = {k: "attr", obj: node, name: name.value, comparable: true};
        }
        continue;
      }
      if (token.type === "LSQB") {
        this.next();
        var key = this.peek();
        if (key === null || (key.type !== "STRING" && key.type !== "NUMBER")) this.fail("a string or a number");
        this.next();
        var close = this.peek();
        if (close === null || close.type !== "RSQB") this.fail("']'");
        this.next();
        depth++;
        node = {k: "index", obj: node, key: key, comparable: true};
        continue;
      }
      return node;
    }
  };

  // -- literals -----------------------------------------------------------------------------
  var ESCAPES = {n: "\n", t: "\t", r: "\r", b: "\b", f: "\f", "0": "\0", "\\": "\\", '"': '"', "'": "'", "/": "/"};

  function unescape(literal, column) {
    var body = literal.slice(1, -1);
    if (body.indexOf("\\") < 0) return body;
    return body.replace(/\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[\s\S])/g, function (all, code, offset) {
      if (code.length > 1) return String.fromCharCode(parseInt(code.slice(1), 16));
      if (has(ESCAPES, code)) return ESCAPES[code];
      throw new KflError("unknown escape '\\" + code + "' in a string (a regex literal r\"...\" keeps backslashes as they are)", column + 1 + offset);
    });
  }

  function number(token) {
    var text = token.value;
    if (/[.eE]/.test(text)) {
      var value = parseFloat(text);
      if (!isFinite(value)) throw new KflError("number out of range: " + text.slice(0, 20), token.start + 1);
      return value;
    }
    if (text.replace("-", "").length > MAX_INT_DIGITS) throw new KflError("number too long: " + text.slice(0, 20) + "...", token.start + 1);
    return parseInt(text, 10);
  }

  // A regex literal, RE2 as the workers run it (re2.js: the same refusals, linear time).
  function Regex(source, column, prefix) {
    // as compiler.py's Regex: endsWith() is the pattern followed by \z, under its leading flags
    var head = /^\(\?[imsU]+\)/.exec(source), flags = head ? head[0] : "";
    var pattern, end;
    try {
      pattern = __re2.compile(source);
      end = __re2.compile(flags + "(?:" + source.slice(flags.length) + ")\\z");
    } catch (error) {
      if (error instanceof __re2.RegexError) throw new KflError("invalid regex: " + error.message, column + prefix + error.position);
      // nested deeper than quickjs's stack (shark.kfl says the same on a RecursionError)
      if (error instanceof InternalError && /stack overflow/.test(error.message)) throw new KflError("invalid regex: too complex", column);
      throw error;
    }
    this.search = pattern.search;
    this.full = pattern.full;
    this.start = pattern.prefix;
    this.end = end.search;
    this.source = source;
  }

  // -- run-time operations (compiler.py's op_* and h_*) ------------------------------------
  function kind(v) {
    if (v === null || v === undefined) return "null";
    var t = typeof v;
    if (t === "string") return "str";
    if (t === "number") return "num";
    if (t === "boolean") return "bool";
    if (Array.isArray(v)) return "list";
    if (v instanceof Regex) return "regex";
    if (t === "object") return "dict";
    return "other";
  }

  function deepEqual(a, b) {   // Python's == on JSON values (True == 1 inside containers)
    var ka = kind(a), kb = kind(b);
    if ((ka === "num" || ka === "bool") && (kb === "num" || kb === "bool")) return Number(a) === Number(b);
    if (ka !== kb) return false;
    if (ka === "list") {
      if (a.length !== b.length) return false;
      for (var i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
      return true;
    }
    if (ka === "dict") {
      var keys = Object.keys(a);
      if (keys.length !== Object.keys(b).length) return false;
      for (var j = 0; j < keys.length; j++) if (!has(b, keys[j]) || !deepEqual(a[keys[j]], b[keys[j]])) return false;
      return true;
    }
    return a === b;
  }

  function opEq(a, b) {
    if (a === null || a === undefined || b === null || b === undefined) return false;
    var ka = kind(a), kb = kind(b);
    if (ka === "regex") return kb === "str" && a.full.test(b);
    if (kb === "regex") return ka === "str" && b.full.test(a);
    return ka === kb && ka !== "other" && deepEqual(a, b);
  }
  function opNe(a, b) {
    if (a === null || a === undefined || b === null || b === undefined) return false;
    var ka = kind(a), kb = kind(b);
    if (ka === "regex") return kb === "str" && !a.full.test(b);
    if (kb === "regex") return ka === "str" && !b.full.test(a);
    return ka === kb && ka !== "other" && !deepEqual(a, b);
  }
  function ordered(a, b) { var ka = kind(a); return (ka === "num" || ka === "str") && ka === kind(b); }
  function cmpStr(a, b) {  // Python compares strings by code point, JS by UTF-16 unit
    var x = Array.from(a), y = Array.from(b), n = Math.min(x.length, y.length);
    for (var i = 0; i < n; i++) {
      var cx = x[i].codePointAt(0), cy = y[i].codePointAt(0);
      if (cx !== cy) return cx < cy ? -1 : 1;
    }
    return x.length === y.length ? 0 : (x.length < y.length ? -1 : 1);
  }
  function order(a, b) { return typeof a === "string" ? cmpStr(a, b) : (a < b ? -1 : (a > b ? 1 : 0)); }
  var OPS = {
    "==": opEq, "!=": opNe,
    "<": function (a, b) { return ordered(a, b) && order(a, b) < 0; },
    "<=": function (a, b) { return ordered(a, b) && order(a, b) <= 0; },
    ">": function (a, b) { return ordered(a, b) && order(a, b) > 0; },
    ">=": function (a, b) { return ordered(a, b) && order(a, b) >= 0; }
  };
  var FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="};

  function opIn(item, container) {
    var k = kind(container);
    if (k === "list") {
      for (var i = 0; i < container.length; i++) if (opEq(item, container[i])) return true;
      return false;
    }
    if (k === "str") {
      if (typeof item === "string") return container.indexOf(item) >= 0;
      return item instanceof Regex && item.search.test(container);
    }
    if (k === "dict") return typeof item === "string" && has(container, item);
    return false;
  }

  var HELPER_FUNCS = {
    startsWith: function (v, a) {
      if (typeof v !== "string") return false;
      if (typeof a === "string") return v.slice(0, a.length) === a;
      return a instanceof Regex && a.start.test(v);
    },
    endsWith: function (v, a) {
      if (typeof v !== "string") return false;
      if (typeof a === "string") return a.length === 0 || v.slice(-a.length) === a;
      return a instanceof Regex && a.end.test(v);
    },
    contains: function (v, a) {
      var k = kind(v);
      if (k === "str") {
        if (typeof a === "string") return v.indexOf(a) >= 0;
        return a instanceof Regex && a.search.test(v);
      }
      if (k === "list") {
        for (var i = 0; i < v.length; i++) if (opEq(v[i], a)) return true;
        return false;
      }
      if (k === "dict") return typeof a === "string" && has(v, a);
      return false;
    },
    matches: function (v, a) { return typeof v === "string" && a instanceof Regex && a.search.test(v); },
    lower: function (v) { return typeof v === "string" ? v.toLowerCase() : null; },
    upper: function (v) { return typeof v === "string" ? v.toUpperCase() : null; },
    len: function (v) {
      var k = kind(v);
      if (k === "str") return Array.from(v).length;
      if (k === "list") return v.length;
      if (k === "dict") return Object.keys(v).length;
      return null;
    }
  };

  function truthy(v) {   // Python's bool() on JSON values
    var k = kind(v);
    if (k === "null") return false;
    if (k === "bool") return v;
    if (k === "num") return v !== 0;
    if (k === "str" || k === "list") return v.length > 0;
    if (k === "dict") return Object.keys(v).length > 0;
    return true;
  }

  function get(object, key) {
    if (isDict(object) && typeof key === "string") return has(object, key) && object[key] !== undefined ? object[key] : null;
    if (Array.isArray(object) && typeof key === "number") {
      var i = key < 0 ? object.length + key : key;
      return i >= 0 && i < object.length ? object[i] : null;
    }
    return null;
  }

  // -- compiler: tree -> closures (compiler.py's _Compiler) --------------------------------
  var MISSING = {};
  function constant(value, column, nullLiteral) {
    return {get: function () { return value; }, column: column, c: value, nullLiteral: !!nullLiteral};
  }
  function isConst(value) { return value.c !== MISSING; }

  function didYouMean(name, choices) {
    var lowered = name.toLowerCase();
    for (var i = 0; i < choices.length; i++) if (choices[i].toLowerCase() === lowered) return " (did you mean '" + choices[i] + "'?)";
    return "";
  }

  // as aliases.py's absent(): why a KFL2 name has no counterpart, by name or by its longest "x_" prefix
  function absent(name) {
    if (has(ABSENT, name)) return ABSENT[name];
    var best = null;
    Object.keys(ABSENT).forEach(function (key) {
      if (key.charAt(key.length - 1) === "_" && name.indexOf(key) === 0 && (best === null || key.length > best.length)) best = key;
    });
    return best === null ? null : ABSENT[best];
  }

  function checkRoot(name, column) {
    if (has(KEYWORDS, name)) throw new KflError("expected a value, got the keyword '" + name + "'", column);
    if (FIELDS.indexOf(name) >= 0) return;
    if (PROTOCOLS.indexOf(name) >= 0) {
      throw new KflError("'" + name + "' is a protocol name: it stands alone (" + name + " and ...); its fields are under request. and response.", column);
    }
    var reason = absent(name);
    if (reason !== null) {
      throw new KflError("unknown field '" + name + "': a Kubeshark (KFL2) name with no counterpart here; " + reason + " (docs/KFL.md)", column);
    }
    throw new KflError("unknown field '" + name + "'" + didYouMean(name, FIELDS.concat(PROTOCOLS, Object.keys(ALIASES))) +
                       "; expected a protocol name, one of " + FIELDS.join(", ") + " or a Kubeshark (KFL2) name (docs/KFL.md)", column);
  }

  function bareName(name, column) {
    if (name === "tls") return function (e) { return e.protocol === "tls" || e.tls === true; };
    if (has(PROTOCOL_ALIASES, name)) name = PROTOCOL_ALIASES[name];
    if (PROTOCOLS.indexOf(name) >= 0) return function (e) { return e.protocol === name; };
    if (has(ALIASES, name) && FIELDS.indexOf(name) < 0) {
      var alias = ALIASES[name];
      return function (e) { return truthy(alias(e)); };
    }
    checkRoot(name, column);
    return function (e) { return truthy(get(e, name)); };
  }

  function boolean(node) {
    switch (node.k) {
      case "or": {
        var ors = node.items.map(boolean);
        return function (e) { for (var i = 0; i < ors.length; i++) if (ors[i](e)) return true; return false; };
      }
      case "and": {
        var ands = node.items.map(boolean);
        return function (e) { for (var i = 0; i < ands.length; i++) if (!ands[i](e)) return false; return true; };
      }
      case "not": {
        var inner = boolean(node.e);
        return function (e) { return !inner(e); };
      }
      case "group": return boolean(node.e);
      case "cmp": return compare(node);
      case "in": return inTest(node);
      case "field": return bareName(node.name, node.col);
    }
    var v = value(node);
    if (isConst(v)) {
      if (v.c instanceof Regex) {
        throw new KflError("a regex literal alone tests nothing; compare a field with it: field == r\"...\" or field.matches(r\"...\")", v.column);
      }
      var result = truthy(v.c);
      return function () { return result; };
    }
    var getter = v.get;
    return function (e) { return truthy(getter(e)); };
  }

  // as compiler.py's canonical_protocol: protocol == "HTTP" (KFL2's capitals) compares as ours
  function canonicalProtocol(v) {
    if (typeof v !== "string") return v;
    var name = v.toLowerCase();
    if (has(PROTOCOL_ALIASES, name)) name = PROTOCOL_ALIASES[name];
    return PROTOCOLS.indexOf(name) >= 0 ? name : v;
  }

  function compare(node) {
    var op = node.op, left = value(node.l), right = value(node.r);
    if (left.field === "protocol" && isConst(right)) right = constant(canonicalProtocol(right.c), right.column);
    if (right.field === "protocol" && isConst(left)) left = constant(canonicalProtocol(left.c), left.column);
    [left, right].forEach(function (side) {
      if (side.c instanceof Regex && op !== "==" && op !== "!=") throw new KflError("a regex can only be compared with == or !=, not " + op, side.column);
    });
    if (isConst(left) && !isConst(right)) { var t = left; left = right; right = t; op = FLIPPED[op]; }
    var getL = left.get, getR = right.get, fn = OPS[op];
    if (left.nullLiteral || right.nullLiteral) {
      if (left.nullLiteral && right.nullLiteral) { var same = op === "=="; return function () { return same; }; }
      if (op === "==") return function (e) { return getL(e) === null || getL(e) === undefined; };
      if (op === "!=") return function (e) { var v = getL(e); return v !== null && v !== undefined; };
      return function () { return false; };
    }
    if (isConst(left) && isConst(right)) { var fixed = fn(left.c, right.c); return function () { return fixed; }; }
    return function (e) { return fn(getL(e), getR(e)); };
  }

  function inTest(node) {
    var item = value(node.l), container = value(node.r);
    if (isConst(container) && kind(container.c) !== "list" && kind(container.c) !== "str") {
      throw new KflError("expected a list, a string or a field after 'in'", container.column);
    }
    if (item.field === "protocol" && isConst(container) && kind(container.c) === "list") {
      container = constant(container.c.map(canonicalProtocol), container.column);
    }
    var getItem = item.get, getContainer = container.get;
    if (isConst(container) && kind(container.c) === "list" && container.c.every(function (v) { return typeof v === "string"; })) {
      var strings = container.c;   // as compiler.py: only a string item can be among strings
      return function (e) { var v = getItem(e); return typeof v === "string" && strings.indexOf(v) >= 0; };
    }
    return function (e) { return opIn(getItem(e), getContainer(e)); };
  }

  function value(node) {
    switch (node.k) {
      case "str": return constant(unescape(node.token.value, node.col), node.col);
      case "re": return constant(new Regex(node.token.value.slice(2, -1), node.col, 2), node.col);
      case "num": return constant(number(node.token), node.col);
      case "bool": return constant(node.v, node.col);
      case "null": return constant(null, node.col, true);
      case "list": {
        var items = node.items.map(value);
        if (items.every(isConst)) return constant(items.map(function (i) { return i.c; }), node.col);
        var getters = items.map(function (i) { return i.get; });
        return {get: function (e) { return getters.map(function (g) { return g(e); }); }, column: node.col, c: MISSING};
      }
      case "group": {
        var test = boolean(node.e);
        return {get: test, column: node.col, c: MISSING};
      }
      case "field": case "attr": case "index": return path(node);
      case "call": return call(node);
      case "func": return func(node);
      case "arith": return arith(node);
    }
    var other = boolean(node);
    return {get: other, column: node.col || 1, c: MISSING};
  }

  function path(node) {
    var steps = [], current = node;
    while (current.k === "attr" || current.k === "index") {
      if (current.k === "attr") {
        steps.push(current.name);
      } else {
        var key = current.key;
        if (key.type === "STRING") {
          steps.push(unescape(key.value, key.start + 1));
        } else {
          var n = number(key);
          if (Math.floor(n) !== n || /[.eE]/.test(key.value)) {
            throw new KflError("an index must be a whole number or a \"quoted key\", got " + key.value, key.start + 1);
          }
          steps.push(n);
        }
      }
      current = current.obj;
    }
    steps.reverse();
    if (current.k !== "field") {   // a helper's result (or a group), indexed further
      var base = value(current);
      var baseGet = base.get;
      return {get: function (e) { var v = baseGet(e); for (var i = 0; i < steps.length; i++) v = get(v, steps[i]); return v; },
              column: base.column, c: MISSING};
    }
    var root = current.name;
    var asProtocol = has(PROTOCOL_ALIASES, root) ? PROTOCOL_ALIASES[root] : root;
    if (!steps.length && PROTOCOLS.indexOf(asProtocol) >= 0 && FIELDS.indexOf(root) < 0) {
      return {get: bareName(root, current.col), column: current.col, c: MISSING};
    }
    var aliased = alias(root, steps, current.col);
    if (aliased !== null) return {get: aliased, column: current.col, c: MISSING};
    checkRoot(root, current.col);
    return {get: function (e) {
      var v = get(e, root);
      for (var i = 0; i < steps.length; i++) { v = get(v, steps[i]); if (v === null) return null; }
      return v;
    }, column: current.col, c: MISSING, field: steps.length ? null : root};
  }

  function call(node) {
    var name = node.name;
    if (!has(HELPERS, name)) {
      throw new KflError("unknown helper '" + name + "'" + didYouMean(name, Object.keys(HELPERS)) +
                         "; expected one of " + Object.keys(HELPERS).join(", "), node.nameCol);
    }
    var receiver = value(node.obj), args = node.args.map(value), wanted = HELPERS[name];
    if (args.length !== wanted) {
      throw new KflError(name + "() takes " + (wanted === 0 ? "no arguments" : "one argument") + ", got " + args.length, node.lpar);
    }
    var fn = HELPER_FUNCS[name], getReceiver = receiver.get;
    if (wanted === 0) return {get: function (e) { return fn(getReceiver(e)); }, column: receiver.column, c: MISSING};
    var arg = args[0];
    if (name === "matches") {
      if (!isConst(arg) || (typeof arg.c !== "string" && !(arg.c instanceof Regex))) {
        throw new KflError("matches() takes a string or regex literal", arg.column);
      }
      if (typeof arg.c === "string") arg = constant(new Regex(arg.c, arg.column, 1), arg.column);
    } else if (isConst(arg) && typeof arg.c !== "string" && !(arg.c instanceof Regex) && name !== "contains") {
      throw new KflError(name + "() takes a string or a regex", arg.column);
    }
    var getArg = arg.get;
    return {get: function (e) { return fn(getReceiver(e), getArg(e)); }, column: receiver.column, c: MISSING};
  }

  // -- Kubeshark's KFL2 names (shark/kfl/aliases.py, rule for rule) ------------------------
  function at() {
    var path = arguments;
    return function (e) {
      var v = e;
      for (var i = 0; i < path.length; i++) { if (!isDict(v)) return null; v = get(v, path[i]); }
      return v;
    };
  }
  function of(protocol, getter) { return function (e) { return isDict(e) && e.protocol === protocol ? getter(e) : null; }; }
  function endpoint(side, kinds, field) {
    return function (e) {
      var point = get(e, side);
      return isDict(point) && kinds.indexOf(get(point, "kind")) >= 0 ? get(point, field) : null;
    };
  }
  function both(kinds, field) {
    return function (e) {
      var out = [];
      ["src", "dst"].forEach(function (side) {
        var point = get(e, side);
        if (isDict(point) && (kinds === null || kinds.indexOf(get(point, "kind")) >= 0)) {
          var v = get(point, field);
          if (typeof v === "string" && v && out.indexOf(v) < 0) out.push(v);
        }
      });
      return out;
    };
  }
  function listOf(getter) { return function (e) { var v = getter(e); return v === null ? [] : [v]; }; }
  function upper(getter) { return function (e) { var v = getter(e); return typeof v === "string" ? v.toUpperCase() : null; }; }
  function success(protocol) {
    return function (e) { return isDict(e) && e.protocol === protocol && isDict(get(e, "response")) && get(e.response, "error") === null; };
  }
  function isAnswered(protocol, side) { return function (e) { return isDict(e) && e.protocol === protocol && isDict(get(e, side)); }; }
  function quotePlus(text) {   // Python's urllib.parse.quote_plus
    var out = "", bytes = unescape_utf8(text);
    for (var i = 0; i < bytes.length; i++) {
      var b = bytes[i], c = String.fromCharCode(b);
      if (/[A-Za-z0-9_.~-]/.test(c)) out += c;
      else if (c === " ") out += "+";
      else out += "%" + (b < 16 ? "0" : "") + b.toString(16).toUpperCase();
    }
    return out;
  }
  function unescape_utf8(text) {
    var bytes = [], encoded = encodeURIComponent(text);
    for (var i = 0; i < encoded.length; i++) {
      if (encoded[i] === "%") { bytes.push(parseInt(encoded.slice(i + 1, i + 3), 16)); i += 2; }
      else bytes.push(encoded.charCodeAt(i));
    }
    return bytes;
  }
  function url(e) {
    var request = get(e, "request");
    if (!isDict(request) || typeof get(request, "path") !== "string") return null;
    var query = get(request, "query");
    if (!isDict(query) || !Object.keys(query).length) return request.path;
    var pairs = [], keys = Object.keys(query);
    for (var i = 0; i < keys.length; i++) {
      var v = query[keys[i]];
      if (typeof v === "string") { pairs.push(quotePlus(keys[i]) + "=" + quotePlus(v)); continue; }
      if (!Array.isArray(v) || !v.every(function (s) { return typeof s === "string"; })) return null;
      for (var j = 0; j < v.length; j++) pairs.push(quotePlus(keys[i]) + "=" + quotePlus(v[j]));
    }
    return request.path + "?" + pairs.join("&");
  }
  function queryString(e) {
    var query = at("request", "query")(e);
    if (!isDict(query)) return null;
    var out = {};
    Object.keys(query).forEach(function (k) { var v = query[k]; out[k] = Array.isArray(v) && v.length ? v[0] : v; });
    return out;
  }
  function redisCommand(e) {
    var request = get(e, "request");
    if (!isDict(e) || e.protocol !== "redis" || !isDict(request) || typeof get(request, "command") !== "string") return null;
    var args = get(request, "arguments");
    if (Array.isArray(args) && args.every(function (a) { return typeof a === "string"; })) return [request.command].concat(args).join(" ");
    return request.command;
  }
  var POD = ["pod", "service"], SERVICE = ["service"];
  function sizeOf(protocol, side) { return of(protocol, at("size", side)); }
  function totalOf(protocol) {   // KFL2's *_total_size: request plus response, 0 for a side not seen
    return function (e) {
      var size = get(e, "size");
      if (!isDict(e) || e.protocol !== protocol || !isDict(size)) return null;
      return [get(size, "request"), get(size, "response")].reduce(function (sum, v) {
        return typeof v === "number" && Math.floor(v) === v ? sum + v : sum;
      }, 0);
    };
  }
  var ALIAS_GETTERS = {
    status_code: at("status"), method: at("request", "method"), path: at("request", "path"), url: url,
    http_version: at("request", "version"), query_string: queryString,
    request_body_size: at("request", "content_length"), response_body_size: at("response", "content_length"),
    timestamp: at("ts"),
    elapsed_time: function (e) { var ms = get(e, "elapsed_ms"); return typeof ms === "number" ? ms * 1000 : null; },
    node_name: at("node"), node_id: at("node"), worker: at("node"),
    "src.pod.name": endpoint("src", POD, "name"), "src.pod.namespace": endpoint("src", POD, "namespace"),
    "dst.pod.name": endpoint("dst", POD, "name"), "dst.pod.namespace": endpoint("dst", POD, "namespace"),
    "src.service.name": endpoint("src", SERVICE, "name"), "src.service.namespace": endpoint("src", SERVICE, "namespace"),
    "dst.service.name": endpoint("dst", SERVICE, "name"), "dst.service.namespace": endpoint("dst", SERVICE, "namespace"),
    namespaces: both(null, "namespace"), pods: both(["pod"], "name"), services: both(SERVICE, "name"),
    dns_questions: of("dns", listOf(at("request", "qname"))), dns_question_types: of("dns", listOf(at("request", "qtype"))),
    dns_answers: of("dns", function (e) {
      var answers = at("response", "answers")(e);
      return (Array.isArray(answers) ? answers : []).filter(isDict).map(function (a) { return get(a, "data"); });
    }),
    dns_request: isAnswered("dns", "request"), dns_response: isAnswered("dns", "response"),
    redis_type: of("redis", at("request", "command")), redis_command: redisCommand, redis_key: of("redis", at("request", "key")),
    kafka_api_key: of("kafka", at("request", "api_key")), kafka_api_key_name: of("kafka", upper(at("request", "api"))),
    kafka_client_id: of("kafka", at("request", "client_id")), kafka_request_summary: of("kafka", at("request", "topic")),
    amqp_method: of("amqp", at("request", "method")),
    mysql_command: of("mysql", at("request", "command")), mysql_query: of("mysql", at("request", "query")),
    mysql_database: of("mysql", at("request", "database")), mysql_success: success("mysql"),
    mysql_error_code: of("mysql", at("response", "error", "code")),
    mysql_error_message: of("mysql", at("response", "error", "message")),
    postgresql_query: of("postgres", at("request", "query")), postgresql_database: of("postgres", at("request", "database")),
    postgresql_user: of("postgres", at("request", "user")),
    postgresql_command: of("postgres", function (e) {
      var tag = at("response", "command_tag")(e);
      return typeof tag === "string" ? tag.split(" ")[0] || null : null;
    }),
    postgresql_success: success("postgres"),
    postgresql_error_code: of("postgres", at("response", "error", "code")),
    postgresql_error_message: of("postgres", at("response", "error", "message")),
    grpc_method: of("grpc", at("request", "method")), grpc_status: of("grpc", at("status")),
    kafka_request: isAnswered("kafka", "request"), kafka_response: isAnswered("kafka", "response"),
    amqp_request: isAnswered("amqp", "request"), amqp_response: isAnswered("amqp", "response"),
    ws_request: isAnswered("websocket", "request"), ws_response: isAnswered("websocket", "response"),
    kafka_size: function (e) {
      var request = sizeOf("kafka", "request")(e);
      return typeof request === "number" && Math.floor(request) === request && request > 0 ? request : sizeOf("kafka", "response")(e);
    }
  };
  // KFL2's per-protocol sizes, as aliases.py's _SIZES
  [["dns", "dns_request_length", "dns_response_length", "dns_total_size"],
   ["redis", "redis_request_size", "redis_response_size", "redis_total_size"],
   ["kafka", "kafka_request_size", "kafka_response_size", null],
   ["amqp", "amqp_request_length", "amqp_response_length", "amqp_total_size"],
   ["mysql", "mysql_request_size", "mysql_response_size", "mysql_total_size"],
   ["postgres", "postgresql_request_size", "postgresql_response_size", "postgresql_total_size"],
   ["tls", "tls_request_size", "tls_response_size", "tls_total_size"]].forEach(function (row) {
    ALIAS_GETTERS[row[1]] = sizeOf(row[0], "request");
    ALIAS_GETTERS[row[2]] = sizeOf(row[0], "response");
    if (row[3]) ALIAS_GETTERS[row[3]] = totalOf(row[0]);
  });

  function alias(root, steps, column) {
    var names = [root];
    for (var i = 0; i < steps.length && typeof steps[i] === "string"; i++) names.push(names[i] + "." + steps[i]);
    for (var used = names.length; used > 0; used--) {
      var name = names[used - 1];
      if (has(ALIASES, name) && (used > 1 || FIELDS.indexOf(root) < 0)) {
        var getter = ALIASES[name], rest = steps.slice(used - 1);
        if (!rest.length) return getter;
        return function (e) { var v = getter(e); for (var j = 0; j < rest.length; j++) v = get(v, rest[j]); return v; };
      }
    }
    if (names.length > 1 && /^(src|dst)\.(pod|service)$/.test(names[1])) {
      var shown = names.length > 2 ? names[2] : names[1];
      throw new KflError("unknown field '" + shown + "'" + didYouMean(shown, Object.keys(ALIASES)) + "; under " + names[1] + " only " +
                         Object.keys(ALIASES).filter(function (a) { return a.indexOf(names[1] + ".") === 0; }).join(", "), column);
    }
    if ((root === "src" || root === "dst") && names.length > 1 && ENDPOINT_FIELDS.indexOf(steps[0]) < 0) {
      var known = ENDPOINT_FIELDS.map(function (f) { return root + "." + f; }).concat(
        Object.keys(ALIASES).filter(function (a) { return a.indexOf(root + ".") === 0; }));
      throw new KflError("unknown field '" + names[1] + "'" + didYouMean(names[1], known) + "; under " + root + " only " +
                         known.join(", "), column);
    }
    return null;
  }

  var DURATION = /^(?:(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+|[0-9]+(?:\.[0-9]+)?)$/;
  var DURATION_PART = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g, DURATION_UNITS = {ms: 0.001, s: 1, m: 60, h: 3600, d: 86400};
  var TIMESTAMP = /^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?$/;

  function duration(text, column) {
    if (!DURATION.test(text)) {
      throw new KflError("duration(): " + pyRepr(text) + " is not a duration; expected a number of seconds or numbers with units ms, s, m, h, d, e.g. duration(\"5m\"), duration(\"1h30m\")", column);
    }
    var total = 0, m, any = false;
    DURATION_PART.lastIndex = 0;
    while ((m = DURATION_PART.exec(text)) !== null) { total += parseFloat(m[1]) * DURATION_UNITS[m[2]]; any = true; }
    return any ? total : parseFloat(text);
  }
  function daysFromCivil(y, m, d) {   // days since 1970-01-01 of a proleptic Gregorian date
    y -= m <= 2 ? 1 : 0;
    var era = Math.floor(y / 400), yoe = y - era * 400;
    var doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
    return era * 146097 + yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy - 719468;
  }
  function timestamp(text, column) {
    var m = TIMESTAMP.exec(text);
    var bad = new KflError("timestamp(): " + pyRepr(text) + " is not a time; expected ISO 8601 as \"2026-03-14T22:00:00Z\" (UTC without an offset)", column);
    if (m === null) throw bad;
    var year = +m[1], month = +m[2], day = +m[3], hour = +(m[4] || 0), minute = +(m[5] || 0), second = +(m[6] || 0);
    var leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
    var days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days[month - 1] || hour > 23 || minute > 59 || second > 59) throw bad;
    var offset = 0, zone = m[8];
    if (zone && zone !== "Z") {
      var hours = +zone.slice(1, 3), minutes = +zone.slice(4, 6);
      if (hours > 23 || minutes > 59) throw bad;
      offset = (hours * 60 + minutes) * 60 * (zone[0] === "+" ? 1 : -1);
    }
    var seconds = daysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    var micro = parseInt((m[7] || "").padEnd(6, "0"), 10);
    return (seconds - offset) + micro / 1000000;
  }
  function pyRepr(text) { return "'" + text.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'"; }

  function func(node) {
    var name = node.name;
    if (!has(FUNCTIONS, name)) {
      throw new KflError("unknown function '" + name + "'" + didYouMean(name, Object.keys(FUNCTIONS)) + "; expected one of " +
                         Object.keys(FUNCTIONS).join(", ") + " (helpers are called on a value: x.startsWith(...))", node.col);
    }
    var args = node.args.map(value), wanted = FUNCTIONS[name];
    if (args.length !== wanted) {
      throw new KflError(name + "() takes " + wanted + " argument" + (wanted !== 1 ? "s" : "") + ", got " + args.length, node.lpar);
    }
    if (name === "now") return constant(Date.now() / 1000, node.col);
    if (name === "duration" || name === "timestamp") {
      var arg = args[0];
      if (!isConst(arg) || typeof arg.c !== "string") throw new KflError(name + "() takes a string literal", arg.column);
      return constant(name === "duration" ? duration(arg.c, arg.column) : timestamp(arg.c, arg.column), node.col);
    }
    if (name === "size") {
      var getSized = args[0].get;
      return {get: function (e) { return HELPER_FUNCS.len(getSized(e)); }, column: node.col, c: MISSING};
    }
    var getMap = args[0].get, getKey = args[1].get, getDefault = args[2].get;
    return {get: function (e) {
      var container = getMap(e), key = getKey(e);
      return isDict(container) && typeof key === "string" && has(container, key) && container[key] !== undefined ? container[key] : getDefault(e);
    }, column: node.col, c: MISSING};
  }

  function arith(node) {
    var left = value(node.l), right = value(node.r), sign = node.op === "+" ? 1 : -1;
    [left, right].forEach(function (side) {
      if (isConst(side) && kind(side.c) !== "num") throw new KflError("'" + node.op + "' takes numbers (times and durations are seconds)", side.column);
    });
    function compute(a, b) { return kind(a) === "num" && kind(b) === "num" ? a + sign * b : null; }
    if (isConst(left) && isConst(right)) return constant(compute(left.c, right.c), left.column);
    var getL = left.get, getR = right.get;
    return {get: function (e) { return compute(getL(e), getR(e)); }, column: left.column, c: MISSING};
  }

  // -- the public side ------------------------------------------------------------------------
  function compile(text) {
    if (typeof text !== "string") throw new KflError("the query must be text", 1);
    if (text.length > MAX_QUERY_LENGTH) throw new KflError("the query is longer than " + MAX_QUERY_LENGTH + " characters", MAX_QUERY_LENGTH + 1);
    if (!text.trim()) return function () { return true; };
    var test = boolean(new Parser(text).parse());
    return function (entry) {
      try {
        return test(entry) === true;
      } catch (error) {   // a filter answers no, it never fails a hook
        return false;
      }
    };
  }

  var cache = {}, cached = 0, CACHE_SIZE = 256;
  function compiled(text) {
    if (typeof text === "string" && has(cache, text)) return cache[text];
    var query = compile(text);
    if (cached >= CACHE_SIZE) { cache = {}; cached = 0; }
    cache[text] = query;
    cached++;
    return query;
  }

  return {
    KflError: KflError,
    configure: function (fields, protocols, helpers, aliases, protocolAliases, functions, endpointFields, absentNames) {
      FIELDS = fields; PROTOCOLS = protocols; HELPERS = helpers; ENDPOINT_FIELDS = endpointFields || [];
      ABSENT = absentNames || {};
      PROTOCOL_ALIASES = protocolAliases || {}; FUNCTIONS = functions || {}; ALIASES = {};
      (aliases || []).forEach(function (name) {   // shark.kfl's names; a missing getter fails loudly here
        if (!has(ALIAS_GETTERS, name)) throw new Error("kfl.js has no getter for the KFL2 name " + name);
        ALIASES[name] = ALIAS_GETTERS[name];
      });
    },
    compile: compiled,
    // {valid, error, column} as GET /query/validate answers
    check: function (text) {
      try {
        compiled(text);
        return {valid: true, error: null, column: null};
      } catch (error) {
        if (error instanceof KflError) return {valid: false, error: error.toString(), column: error.column};
        throw error;
      }
    }
  };
})();
