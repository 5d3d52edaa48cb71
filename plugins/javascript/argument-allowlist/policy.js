// A call policy in JavaScript: an allow-list of arguments per tool.
//
// Config:
//   default: "allow" (the default) or "deny" — what happens to a tool no
//            rule names;
//   tools:   { "<server>/<tool>": { "<argument>": rule, … }, … } — the key may
//            use `*` as a wildcard; the first key that matches wins. A call
//            may carry only the arguments its rule lists, each passing every
//            check given: `oneOf` (a list of allowed values), `pattern` (a
//            regular expression a string must match), `min`/`max` (bounds on
//            a number), `maxLength` (of a string), `required` (must be there).
//
// Built with componentize-js against the `call-policy` world of wit/, with
// every WASI feature disabled: the component imports nothing but the contract.

const CHECKS = ["oneOf", "pattern", "min", "max", "maxLength", "required"];

function settings(config) {
  return JSON.parse(config);
}

function problemsIn(config) {
  let c;
  try {
    c = settings(config);
  } catch (e) {
    return [`config is not JSON: ${e.message}`];
  }
  if (typeof c !== "object" || c === null || Array.isArray(c)) return ["config must be a table"];
  const problems = [];
  for (const key of Object.keys(c)) {
    if (key !== "default" && key !== "tools") problems.push(`${key}: unknown field (known: default, tools)`);
  }
  if (c.default !== undefined && c.default !== "allow" && c.default !== "deny") {
    problems.push(`default: must be "allow" or "deny"`);
  }
  for (const [tool, rules] of Object.entries(c.tools ?? {})) {
    if (typeof rules !== "object" || rules === null || Array.isArray(rules)) {
      problems.push(`tools."${tool}": must be a table of arguments`);
      continue;
    }
    for (const [argument, rule] of Object.entries(rules)) {
      const at = `tools."${tool}".${argument}`;
      if (typeof rule !== "object" || rule === null || Array.isArray(rule)) {
        problems.push(`${at}: must be a table of checks`);
        continue;
      }
      for (const check of Object.keys(rule)) {
        if (!CHECKS.includes(check)) problems.push(`${at}.${check}: unknown check (known: ${CHECKS.join(", ")})`);
      }
      if (rule.oneOf !== undefined && !Array.isArray(rule.oneOf)) problems.push(`${at}.oneOf: must be a list`);
      if (rule.pattern !== undefined) {
        try {
          new RegExp(rule.pattern, "u");
        } catch (e) {
          problems.push(`${at}.pattern: ${e.message}`);
        }
      }
      for (const bound of ["min", "max", "maxLength"]) {
        if (rule[bound] !== undefined && typeof rule[bound] !== "number") problems.push(`${at}.${bound}: must be a number`);
      }
    }
  }
  return problems;
}

function matches(glob, name) {
  const escaped = glob.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${escaped.join(".*")}$`, "su").test(name);
}

function deny(reason) {
  return { tag: "deny", val: { code: "argument-not-allowed", reason } };
}

// The reason `value` breaks `rule`, or null.
function broken(name, value, rule) {
  if (rule.oneOf !== undefined && !rule.oneOf.some((allowed) => JSON.stringify(allowed) === JSON.stringify(value))) {
    return `argument "${name}" must be one of ${JSON.stringify(rule.oneOf)}`;
  }
  if (rule.pattern !== undefined && !(typeof value === "string" && new RegExp(rule.pattern, "u").test(value))) {
    return `argument "${name}" must be a string matching /${rule.pattern}/`;
  }
  if (rule.min !== undefined && !(typeof value === "number" && value >= rule.min)) {
    return `argument "${name}" must be a number of at least ${rule.min}`;
  }
  if (rule.max !== undefined && !(typeof value === "number" && value <= rule.max)) {
    return `argument "${name}" must be a number of at most ${rule.max}`;
  }
  if (rule.maxLength !== undefined && !(typeof value === "string" && value.length <= rule.maxLength)) {
    return `argument "${name}" must be a string of at most ${rule.maxLength} characters`;
  }
  return null;
}

export const config = {
  validateConfig(config) {
    const problems = problemsIn(config);
    // A thrown value that is not an Error becomes the `err` of the result.
    if (problems.length > 0) throw problems;
  },
};

export const callHook = {
  onCall(config, call) {
    const c = settings(config);
    const key = `${call.target.server}/${call.target.name}`;
    const glob = Object.keys(c.tools ?? {}).find((g) => matches(g, key));
    if (glob === undefined) {
      return c.default === "deny" ? deny(`${key} has no argument rules, and unlisted tools are denied`) : { tag: "allow" };
    }
    const rules = c.tools[glob];
    const args = JSON.parse(call.arguments);
    for (const [name, value] of Object.entries(args)) {
      if (!Object.hasOwn(rules, name)) return deny(`argument "${name}" is not allowed for ${key}`);
      const reason = broken(name, value, rules[name]);
      if (reason !== null) return deny(reason);
    }
    for (const [name, rule] of Object.entries(rules)) {
      if (rule.required && !Object.hasOwn(args, name)) return deny(`argument "${name}" is required for ${key}`);
    }
    return { tag: "allow" };
  },
};
