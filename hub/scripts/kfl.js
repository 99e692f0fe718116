// KFL (docs/KFL.md) inside a script's JavaScript context, for kfl.match() and kfl.validate().
//
// Why a second implementation: quickjs refuses calls from JS into Python while a time limit
// is set, and every hook runs under one, so a helper that must answer at once cannot ask
// shark.kfl. This file follows shark/kfl (grammar.py, parser.py, compiler.py) rule for rule;
// tests/unit/test_scripts_kfl.py runs both on the documented queries, the invalid ones and
// random ones and requires the same answers. The lists of fields, protocols and helpers come
// from shark.kfl at load time (__kfl.configure), so they cannot drift.
//
// Regexes are RE2 syntax in KFL (shark/regex.py: linear time); here they run as JavaScript
// RegExp after the usual Python forms are translated: leading (?aiLmsu) flags, (?P<name>...),
// \A, \Z. What RE2 refuses (backreferences, lookaround, possessive) is refused here the same
// way; JavaScript's RegExp still backtracks, bounded by the script's time limit.
var __kfl = (function () {
  "use strict";
  var FIELDS = [], PROTOCOLS = [], HELPERS = {};
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
        got += {"=": " (compare with '==')", "&": " (write 'and' or '&&')", "|": " (write 'or' or '||')"}[token.value] || "";
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
  Parser.prototype.comparison = function (depth, closer) {
    var left = this.operand(depth, "an expression");
    var token = this.peek();
    if (token !== null && (token.type === "CMP" || this.opWord("in"))) {
      token = this.next();
      var right = this.operand(depth, "a value");
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
      return this.postfix({k: "field", name: token.value, col: token.start + 1, comparable: true}, depth);
    }
    this.fail(what);
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
          var lpar = this.next(), args = [];
          if (this.peek() !== null && this.peek().type === "RPAR") {
            this.next();
          } else {
            if (this.peek() === null || this.peek().type === "BAD") this.fail("a value or ')'");
            for (;;) {
              args.push(this.operand(depth + 1, "a value"));
              var sep = this.peek();
              if (sep !== null && sep.type === "COMMA") { this.next(); continue; }
              if (sep !== null && sep.type === "RPAR") { this.next(); break; }
              this.fail("',' or ')'");
            }
          }
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

  // What RE2 refuses for running in linear time (shark/regex.py's unsupported(), the same scan
  // and messages): scripts refuse the queries the workers refuse, at the same columns.
  var RE2_WHY = "RE2 runs in linear time and has no backreferences or lookaround";
  var RE2_GROUPS = [["(?<=", "lookbehind (?<=...)"], ["(?<!", "negative lookbehind (?<!...)"],
    ["(?P=", "a named backreference (?P=name)"], ["(?=", "lookahead (?=...)"],
    ["(?!", "negative lookahead (?!...)"], ["(?>", "an atomic group (?>...)"]];

  function unsupported(source) {
    var index = 0, inSet = false, previous = "", quantifiers = "*+?}";
    while (index < source.length) {
      var ch = source.charAt(index);
      if (ch === "\\") {
        var following = source.charAt(index + 1);
        if (!inSet && following !== "" && "123456789".indexOf(following) >= 0)
          return ["a backreference \\" + following + " is not supported (" + RE2_WHY + ")", index];
        previous = "\\";
        index += 2;
        continue;
      }
      if (inSet) {
        inSet = ch !== "]";
        index += 1;
        continue;
      }
      if (ch === "[") {
        inSet = true;
        index += 1 + (source.charAt(index + 1) === "]" ? 1 : 0) + (source.substr(index + 1, 2) === "^]" ? 1 : 0);
        previous = "]";
        continue;
      }
      if (ch === "(") {
        for (var g = 0; g < RE2_GROUPS.length; g++) {
          if (source.substr(index, RE2_GROUPS[g][0].length) === RE2_GROUPS[g][0])
            return [RE2_GROUPS[g][1] + " is not supported (" + RE2_WHY + ")", index];
        }
      }
      if (ch === "+" && previous !== "" && quantifiers.indexOf(previous) >= 0)
        return ["a possessive quantifier " + previous + "+ is not supported (" + RE2_WHY + ")", index - 1];
      previous = (previous !== "" && quantifiers.indexOf(previous) >= 0 && ch === "?") ? "" : ch;
      index += 1;
    }
    return null;
  }

  function Regex(source, column, prefix) {
    var refused = unsupported(source);
    if (refused !== null) throw new KflError("invalid regex: " + refused[0], column + prefix + refused[1]);
    var flags = "", body = source, m = /^\(\?([aiLmsux]+)\)/.exec(source);
    if (m) {
      if (m[1].indexOf("x") >= 0) throw new KflError("invalid regex: the verbose flag (?x) is not supported in scripts", column + prefix);
      if (m[1].indexOf("i") >= 0) flags += "i";
      if (m[1].indexOf("m") >= 0) flags += "m";
      if (m[1].indexOf("s") >= 0) flags += "s";
      body = source.slice(m[0].length);
    }
    body = body.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>")
      .replace(/\\A/g, "(?<![\\s\\S])").replace(/\\Z/g, "(?![\\s\\S])");
    try {
      this.search = new RegExp(body, flags);
      this.full = new RegExp("(?<![\\s\\S])(?:" + body + ")(?![\\s\\S])", flags);
      this.start = new RegExp("(?<![\\s\\S])(?:" + body + ")", flags);
      this.end = new RegExp("(?:" + body + ")(?![\\s\\S])", flags);
    } catch (error) {
      throw new KflError("invalid regex: " + String(error.message || error), column + prefix);
    }
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

  function checkRoot(name, column) {
    if (has(KEYWORDS, name)) throw new KflError("expected a value, got the keyword '" + name + "'", column);
    if (FIELDS.indexOf(name) >= 0) return;
    if (PROTOCOLS.indexOf(name) >= 0) {
      throw new KflError("'" + name + "' is a protocol name: it stands alone (" + name + " and ...); its fields are under request. and response.", column);
    }
    throw new KflError("unknown field '" + name + "'" + didYouMean(name, FIELDS.concat(PROTOCOLS)) +
                       "; expected a protocol name or one of " + FIELDS.join(", "), column);
  }

  function bareName(name, column) {
    if (name === "tls") return function (e) { return e.protocol === "tls" || e.tls === true; };
    if (PROTOCOLS.indexOf(name) >= 0) return function (e) { return e.protocol === name; };
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

  function compare(node) {
    var op = node.op, left = value(node.l), right = value(node.r);
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
    if (!steps.length && PROTOCOLS.indexOf(root) >= 0 && FIELDS.indexOf(root) < 0) {
      return {get: bareName(root, current.col), column: current.col, c: MISSING};
    }
    checkRoot(root, current.col);
    return {get: function (e) {
      var v = get(e, root);
      for (var i = 0; i < steps.length; i++) { v = get(v, steps[i]); if (v === null) return null; }
      return v;
    }, column: current.col, c: MISSING};
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
    configure: function (fields, protocols, helpers) { FIELDS = fields; PROTOCOLS = protocols; HELPERS = helpers; },
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
