// The README's fenced code blocks, as __test__/readme.test.ts (doctest) and the install test read them.

export const TS = ['ts', 'typescript'];
export const JS = ['js', 'mjs', 'javascript'];
export const NOT_RUN = ['', 'sh', 'text'];

export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  flags: string[];
  code: string;
  /** Lines from the one after the closing fence. */
  after: number;
}

/** The fenced code blocks of a Markdown text (backtick fences at the start of a line). */
export function fencedBlocks(md: string): Block[] {
  const lines = md.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(`{3,})\s*(\S*)\s*(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const close = lines.findIndex((l, j) => j > i && l.trimEnd() === open[1]);
    if (close < 0) throw new Error(`README.md:${i + 1}: the code block is never closed`);
    blocks.push({ line: i + 1, lang: open[2]!, flags: open[3]!.split(/\s+/).filter(Boolean), code: lines.slice(i + 1, close).join('\n') + '\n', after: close + 1 });
    i = close;
  }
  return blocks;
}

/** The program blocks (```ts / ```js ...), each with the ```text block right after it as its stdout. */
export function readmePrograms(readme: string): (Block & { file: string; stdout: string | undefined })[] {
  const blocks = fencedBlocks(readme);
  const lines = readme.split('\n');
  return blocks.flatMap((b, k) => {
    if (![...TS, ...JS].includes(b.lang)) return [];
    const next = blocks[k + 1];
    const adjacent = next?.lang === 'text' && lines.slice(b.after, next.line - 1).every((l) => l.trim() === '');
    return [{ ...b, file: `readme-${b.line}.${TS.includes(b.lang) ? 'ts' : 'mjs'}`, stdout: adjacent ? next.code : undefined }];
  });
}

/** Output compared line by line, trailing whitespace aside. */
export const tidy = (s: string) => s.split('\n').map((l) => l.trimEnd()).join('\n').replace(/\n+$/, '');
