// Tokenizers: GPT-2 BPE (gpt-tokenizer's r50k_base, the GPT-2 vocabulary) and raw UTF-8 bytes.
// Text is always encoded as plain text: "<|endoftext|>" inside a document is not the special token.
import { invalidParameter } from '../train/model-config';

export type TokenizerName = 'gpt2' | 'bytes';
export const TOKENIZER_NAMES: readonly TokenizerName[] = ['gpt2', 'bytes'];

export interface Tokenizer {
  readonly name: TokenizerName;
  /** Number of token ids; every id is in [0, vocabSize). At most 65536 (shards store uint16). */
  readonly vocabSize: number;
  /** The end-of-text id that separates documents. */
  readonly eotToken: number;
  encode(text: string): number[];
  /** The end-of-text id decodes to "<|endoftext|>". */
  decode(ids: ArrayLike<number>): string;
}

export const EOT_TEXT = '<|endoftext|>';

/** The part of gpt-tokenizer's per-encoding module that we use. */
interface BpeModule {
  encode(text: string, options?: { disallowedSpecial?: Set<string> }): number[];
  decode(ids: Iterable<number>): string;
  vocabularySize: number;
}

function checkIds(ids: ArrayLike<number>, vocabSize: number, tokenizer: string): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new RangeError(invalidParameter(`ids[${i}]`, `a ${tokenizer} token id in [0, ${vocabSize})`, id));
    }
  }
}

class Gpt2Tokenizer implements Tokenizer {
  readonly name = 'gpt2' as const;
  readonly vocabSize = 50257;
  readonly eotToken = 50256;
  private bpe: BpeModule | undefined;
  private readonly plain = { disallowedSpecial: new Set<string>() };

  /** The BPE tables take a moment to load; load them on first use. */
  private module(): BpeModule {
    if (!this.bpe) {
      // A plain require: the package's type declarations assume ESM-style resolution that our
      // commonjs/node tsconfig does not do; BpeModule types the part we call.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require('gpt-tokenizer/cjs/encoding/r50k_base') as BpeModule;
      if (mod.vocabularySize !== this.vocabSize) {
        throw new Error(`gpt-tokenizer r50k_base reports ${mod.vocabularySize} tokens, expected ${this.vocabSize}`);
      }
      this.bpe = mod;
    }
    return this.bpe;
  }

  encode(text: string): number[] {
    if (typeof text !== 'string') throw new TypeError(invalidParameter('text', 'a string', typeof text));
    return this.module().encode(text, this.plain);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize, this.name);
    return this.module().decode(Array.from(ids));
  }
}

/** Bytes: ids 0..255 are the UTF-8 bytes of the text, id 256 is end-of-text (vocabSize 257). */
class BytesTokenizer implements Tokenizer {
  readonly name = 'bytes' as const;
  readonly vocabSize = 257;
  readonly eotToken = 256;
  private readonly decoder = new TextDecoder('utf-8');

  encode(text: string): number[] {
    if (typeof text !== 'string') throw new TypeError(invalidParameter('text', 'a string', typeof text));
    return Array.from(Buffer.from(text, 'utf8'));
  }

  /** Invalid UTF-8 sequences decode to U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize, this.name);
    let out = '';
    let start = 0;
    const bytes = Uint8Array.from(ids as ArrayLike<number>, (id) => (id === this.eotToken ? 0 : id));
    for (let i = 0; i <= ids.length; i++) {
      if (i === ids.length || ids[i] === this.eotToken) {
        out += this.decoder.decode(bytes.subarray(start, i));
        if (i < ids.length) out += EOT_TEXT;
        start = i + 1;
      }
    }
    return out;
  }
}

const cache = new Map<TokenizerName, Tokenizer>();

export function isTokenizerName(name: unknown): name is TokenizerName {
  return typeof name === 'string' && (TOKENIZER_NAMES as readonly string[]).includes(name);
}

/** The tokenizer called `name` ('gpt2' or 'bytes'); a RangeError names any other. */
export function getTokenizer(name: string): Tokenizer {
  if (typeof name !== 'string') throw new TypeError(invalidParameter('tokenizer', `one of ${TOKENIZER_NAMES.join(', ')}`, name));
  if (!isTokenizerName(name)) throw new RangeError(invalidParameter('tokenizer', `one of ${TOKENIZER_NAMES.join(', ')}`, name));
  let t = cache.get(name);
  if (!t) {
    t = name === 'gpt2' ? new Gpt2Tokenizer() : new BytesTokenizer();
    cache.set(name, t);
  }
  return t;
}
