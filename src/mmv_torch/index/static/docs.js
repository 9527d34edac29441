"use strict";
// The API reference: /openapi.json rendered as a list of routes with their parameters.
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text) e.textContent = text; if (cls) e.className = cls; return e; };

function typeOf(schema) {
  if (!schema) return "";
  if (schema.anyOf) return schema.anyOf.map(typeOf).filter((t) => t !== "null").join(" | ");
  const bounds = ["minimum", "maximum", "maxLength"].filter((b) => b in schema).map((b) => `${b} ${schema[b]}`);
  return (schema.type || (schema.$ref || "").split("/").pop() || "") + (bounds.length ? ` (${bounds.join(", ")})` : "");
}

fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  const main = document.getElementById("routes");
  main.replaceChildren();
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const sec = el("section", null, "route");
      sec.appendChild(el("h2", `${method.toUpperCase()} ${path}`));
      if (op.description || op.summary) sec.appendChild(el("p", op.description || op.summary));
      const table = el("table");
      const params = (op.parameters || []).map((p) => [p.name, p.in, typeOf(p.schema), p.description || ""]);
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        const media = Object.keys(body)[0];
        let schema = body[media].schema || {};
        if (schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()] || {};
        for (const [name, s] of Object.entries(schema.properties || {})) params.push([name, media, typeOf(s), s.description || ""]);
      }
      for (const row of params) {
        const tr = el("tr");
        row.forEach((c) => tr.appendChild(el("td", c)));
        table.appendChild(tr);
      }
      if (params.length) sec.appendChild(table);
      main.appendChild(sec);
    }
  }
}).catch((err) => { document.getElementById("routes").textContent = `cannot read /openapi.json: ${err}`; });
