// The oracle's sequence format (oracle/README.md): what a VMM does, one step per line, run by
// the guest driver on the real kernel and by ./simulator.ts on ours.

/** One step: optional label, operation and its words. */
export interface Step {
  readonly label?: string;
  readonly op: string;
  readonly args: readonly string[];
  /** 1-based line in its file, for messages. */
  readonly line: number;
}

/** A named sequence: its steps, run in a fresh process (fresh `/dev/iommu`, ids restart). */
export interface Sequence {
  readonly name: string;
  readonly steps: readonly Step[];
}

/** Parses a `.seq` file: `== name` starts a sequence; `#` starts a comment line. */
export function parseSequences(text: string): Sequence[] {
  const out: { name: string; steps: Step[] }[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    if (line.startsWith('==')) {
      out.push({ name: line.slice(2).trim(), steps: [] });
      return;
    }
    const cur = out.at(-1);
    if (!cur) throw new SyntaxError(`line ${i + 1}: a step before the first '== name'`);
    let words = line.split(/[ \t]+/);
    let label: string | undefined;
    if (words[0]!.endsWith(':')) {
      label = words[0]!.slice(0, -1);
      words = words.slice(1);
    }
    if (words.length === 0) return;
    cur.steps.push({ label, op: words[0]!, args: words.slice(1), line: i + 1 });
  });
  const seen = new Set<string>();
  for (const s of out) {
    if (seen.has(s.name)) throw new SyntaxError(`sequence ${s.name} is defined twice`);
    seen.add(s.name);
  }
  return out;
}

/** Renders sequences back into the format (generated corpora). */
export function formatSequences(seqs: readonly Sequence[]): string {
  return seqs.map((s) => [`== ${s.name}`, ...s.steps.map((st) => [st.label ? `${st.label}:` : '', st.op, ...st.args].filter(Boolean).join(' '))].join('\n')).join('\n\n') + '\n';
}

/** One normalised output line (the guest driver prints the same keys in the same order). */
export type StepResult = Record<string, unknown>;
