// Validates custom resources against the CRD schemas packaged by @kubernetes-models (types, required fields,
// enums, patterns, formats: their compiled OpenAPI validators) and against unknown fields, which those validators
// let through: every document is written into a TypeScript file as an object literal typed with the package's
// interface, and TypeScript's excess-property check rejects any field the CRD does not declare.
// Usage: node validate.mjs docs.json  ->  prints {"errors": ["<index> <kind>/<name>: <message>", ...]}
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const here = path.dirname(fileURLToPath(import.meta.url));
const MODELS = {
  "gateway.networking.k8s.io/v1 HTTPRoute": ["@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute", "HTTPRoute", "IHTTPRoute"],
  "keda.sh/v1alpha1 ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", "ScaledObject", "IScaledObject"],
  "monitoring.coreos.com/v1 PodMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor", "PodMonitor", "IPodMonitor"],
  "monitoring.coreos.com/v1 PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "PrometheusRule", "IPrometheusRule"],
  "networking.istio.io/v1 VirtualService": ["@kubernetes-models/istio/networking.istio.io/v1/VirtualService", "VirtualService", "IVirtualService"],
  "networking.istio.io/v1 DestinationRule": ["@kubernetes-models/istio/networking.istio.io/v1/DestinationRule", "DestinationRule", "IDestinationRule"],
};

const docs = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const errors = [];
const lines = [];
for (const [i, doc] of docs.entries()) {
  const key = `${doc.apiVersion} ${doc.kind}`;
  const label = `${i} ${doc.kind}/${doc.metadata?.name}`;
  const model = MODELS[key];
  if (!model) { errors.push(`${label}: no schema for ${key}`); continue; }
  const [mod, cls, iface] = model;
  const resolved = pathToFileURL(path.join(here, "node_modules", mod + ".js")).href;
  const Class = (await import(resolved))[cls];
  try { new Class(doc).validate(); } catch (e) { errors.push(`${label}: ${e.message}`); }
  lines.push(`import type { ${iface} as T${i} } from "${mod}";`);
  lines.push(`export const d${i}: T${i} = ${JSON.stringify(doc)};`);
}
const file = path.join(here, ".check.ts");
fs.writeFileSync(file, lines.join("\n") + "\n");
const program = ts.createProgram([file], {
  noEmit: true, strict: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
});
for (const d of ts.getPreEmitDiagnostics(program)) {
  const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
  const index = where >= 0 ? Math.floor(where / 2) : "?";
  errors.push(`${index} (TypeScript): ${ts.flattenDiagnosticMessageText(d.messageText, " ").slice(0, 400)}`);
}
fs.unlinkSync(file);
console.log(JSON.stringify({ errors }));
