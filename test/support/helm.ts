/**
 * `helm template` for charts/tollgate, with no helm binary: values merged as Helm coalesces them
 * (maps merged key by key, anything else replaced, null deleting a default), checked against the chart's
 * values.schema.json as Helm checks them, every file of templates/ parsed into one template set, each
 * manifest rendered with the built-in objects the chart reads (.Values, .Release, .Chart, .Template),
 * `<no value>` blanked as Helm does, and the output split into YAML documents.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { parse, parseAllDocuments } from 'yaml';
import { Renderer, type GoMap, type GoValue } from './go-template.js';
import { validateJsonSchema } from './json-schema.js';

export const CHART_DIR = new URL('../../../charts/tollgate/', import.meta.url);

export interface Release {
  readonly name: string;
  readonly namespace: string;
}

export interface RenderedDocument {
  /** templates/<file> it came from. */
  readonly source: string;
  readonly text: string;
  /** The document parsed as Kubernetes reads it (YAML 1.1 scalars: `on` is a boolean there). */
  readonly object: Record<string, unknown>;
}

export interface RenderedChart {
  readonly values: GoMap;
  readonly documents: readonly RenderedDocument[];
  readonly notes: string;
}

export class ValuesSchemaError extends Error {
  readonly issues: readonly string[];

  constructor(issues: readonly string[]) {
    super(`values don't meet values.schema.json:\n  ${issues.join('\n  ')}`);
    this.name = 'ValuesSchemaError';
    this.issues = issues;
  }
}

/** Helm's coalescing of a values file over the chart's defaults. */
export function mergeValues(base: GoMap, override: GoMap): GoMap {
  const out: GoMap = { ...base };
  for (const [k, v] of Object.entries(override)) {
    if (v === null) {
      delete out[k];
      continue;
    }
    const b = out[k];
    out[k] = isMap(b) && isMap(v) ? mergeValues(b, v) : v;
  }
  return out;
}

function isMap(v: GoValue): v is GoMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads a YAML values file into Go-like values (numbers stay float64, as Helm reads them through JSON). */
export function readValues(file: URL | string): GoMap {
  const v = parse(readFileSync(file, 'utf8')) as GoValue;
  if (v === null || v === undefined) return {};
  if (!isMap(v)) throw new Error(`${String(file)}: values must be a mapping`);
  return v;
}

/** Renders the chart like `helm template <release.name> charts/tollgate -n <namespace> -f <override>`. */
export function renderChart(override: GoMap = {}, release: Release = { name: 'tollgate', namespace: 'llm' }): RenderedChart {
  const meta = parse(readFileSync(new URL('Chart.yaml', CHART_DIR), 'utf8')) as { name: string; version: string; appVersion: string };
  const values = mergeValues(readValues(new URL('values.yaml', CHART_DIR)), override);
  const schemaFile = new URL('values.schema.json', CHART_DIR);
  if (existsSync(schemaFile)) {
    const issues = validateJsonSchema(JSON.parse(readFileSync(schemaFile, 'utf8')), values);
    if (issues.length > 0) throw new ValuesSchemaError(issues);
  }

  const templatesDir = new URL('templates/', CHART_DIR);
  const files = readdirSync(templatesDir).sort();
  const renderer = new Renderer();
  for (const f of files) renderer.add(`templates/${f}`, readFileSync(new URL(f, templatesDir), 'utf8'));

  const top: GoMap = {
    Values: values,
    Release: { Name: release.name, Namespace: release.namespace, Service: 'Helm', IsInstall: true, IsUpgrade: false, Revision: 1n },
    Chart: { Name: meta.name, Version: meta.version, AppVersion: meta.appVersion },
    Capabilities: {},
  };
  const documents: RenderedDocument[] = [];
  let notes = '';
  for (const f of files) {
    if (f.startsWith('_')) continue;
    const name = `templates/${f}`;
    const text = renderer
      .render(name, { ...top, Template: { Name: `${meta.name}/${name}`, BasePath: `${meta.name}/templates` } })
      .replaceAll('<no value>', '');
    if (f === 'NOTES.txt') {
      notes = text;
      continue;
    }
    for (const doc of text.split(/^---[ \t]*$/m)) {
      if (doc.trim() === '' || doc.split('\n').every((l) => l.trim() === '' || l.trim().startsWith('#'))) continue;
      const parsed = parseAllDocuments(doc, { version: '1.1', uniqueKeys: true });
      const [first] = parsed;
      if (first === undefined || parsed.length !== 1 || !('errors' in first)) throw new Error(`${name}: not one YAML document`);
      if (first.errors.length > 0) throw new Error(`${name}: ${first.errors.map((e) => e.message).join('; ')}\n${doc}`);
      documents.push({ source: name, text: doc, object: first.toJS() as Record<string, unknown> });
    }
  }
  return { values, documents, notes };
}
