/**
 * One YAML file of a config: parsed with merge keys (`<<: *anchor`, as PyYAML, which LiteLLM uses, reads
 * them) and able to say on which line and column a YAML path was written — through aliases and merge keys,
 * so an issue about a value a `<<` brought in points at the anchor where it was written.
 */
import { LineCounter, parseDocument, isAlias, isMap, isPair, isScalar, isSeq, type Document, type Node } from 'yaml';
import type { ConfigIssue, PathSegment } from './issues.js';

export type Locate = (issue: ConfigIssue, path: readonly PathSegment[]) => ConfigIssue;

export interface YamlSource {
  /** The file as the user named it (relative to the including file's directory for an included one). */
  readonly file: string | undefined;
  /** The document as plain data (`null` for an empty file). */
  readonly data: unknown;
  /** Adds the line and column of `path` (or of its nearest existing parent). */
  readonly locate: Locate;
}

/** Parses `text`; a file that is not valid YAML gives its issues instead, each with its line. */
export function parseYamlSource(text: string, file: string | undefined): YamlSource | { issues: ConfigIssue[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  if (doc.errors.length > 0) {
    return {
      issues: doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return { path: '', message: `not valid YAML: ${e.message.split('\n')[0] ?? e.code}`, line: pos.line, column: pos.col };
      }),
    };
  }
  const data: unknown = doc.toJS({ maxAliasCount: 100 }) ?? null;
  return { file, data, locate: locator(doc, lineCounter) };
}

type Ranged = { range?: [number, number, number] | null } | null | undefined;

function locator(doc: Document, lineCounter: LineCounter): Locate {
  return (issue, path) => {
    const start = positionOf(doc, path);
    if (start === undefined) return issue;
    const pos = lineCounter.linePos(start);
    return { ...issue, line: pos.line, column: pos.col };
  };
}

/** The offset where `path` is written: its value, or its key when the value is empty, or the nearest parent. */
function positionOf(doc: Document, path: readonly PathSegment[]): number | undefined {
  let node: unknown = doc.contents;
  let best = rangeStart(node as Ranged);
  for (const seg of path) {
    const next = child(doc, node, seg);
    if (next === undefined) break;
    node = next.value;
    const at = rangeStart(next.value as Ranged) ?? rangeStart(next.key as Ranged);
    if (at !== undefined) best = at;
    if (next.value === null || next.value === undefined) break;
  }
  return best;
}

/** With `merge: true` the `<<` key's value is a symbol (yaml 2's MERGE_KEY). */
function isMergeKey(v: unknown): boolean {
  return v === '<<' || (typeof v === 'symbol' && v.description === '<<');
}

function rangeStart(n: Ranged): number | undefined {
  const r = n?.range;
  return r ? r[0] : undefined;
}

/** The child `seg` of a map or list node, following aliases and `<<` merge keys (the first map that has it). */
function child(doc: Document, node: unknown, seg: PathSegment, depth = 0): { key: unknown; value: unknown } | undefined {
  if (depth > 20) return undefined;
  const n = isAlias(node) ? (node.resolve(doc) as Node | undefined) : node;
  if (isSeq(n)) {
    if (typeof seg !== 'number') return undefined;
    const item: unknown = n.items[seg];
    return item === undefined ? undefined : { key: undefined, value: item };
  }
  if (!isMap(n)) return undefined;
  for (const p of n.items) if (isPair(p) && isScalar(p.key) && p.key.value === seg) return { key: p.key, value: p.value };
  // Merge keys: later pairs of the map win over merged ones (handled above), the first source wins among merged.
  for (const p of n.items) {
    if (!isPair(p) || !isScalar(p.key) || !isMergeKey(p.key.value)) continue;
    const sources: unknown[] = isSeq(p.value) ? p.value.items : [p.value];
    for (const s of sources) {
      const found = child(doc, s, seg, depth + 1);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}
