// Tests for the GPT-2 and byte tokenizers: known ids, round trips including non-ASCII text.
import { EOT_TEXT, getTokenizer } from '../src/data/tokenizer';

const samples = [
  'Hello world',
  'The Fulton County Grand Jury said Friday.\n\nNew paragraph,  two  spaces\ttab.',
  'Ünïcödé: naïve café, 日本語のテキスト, emoji 🚀👩‍🚀, Ελληνικά, עברית',
  '',
  ' leading and trailing ',
];

describe('gpt2 tokenizer', () => {
  const tk = getTokenizer('gpt2');

  test('vocabulary and end-of-text id', () => {
    expect(tk.name).toBe('gpt2');
    expect(tk.vocabSize).toBe(50257);
    expect(tk.eotToken).toBe(50256);
  });

  test('known GPT-2 ids', () => {
    expect(tk.encode('Hello world')).toEqual([15496, 995]);
    expect(tk.encode(' the')).toEqual([262]);
    expect(tk.decode([50256])).toBe(EOT_TEXT);
  });

  test.each(samples)('round trip %j', (text) => {
    const ids = tk.encode(text);
    expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tk.vocabSize)).toBe(true);
    expect(tk.decode(ids)).toBe(text);
  });

  test('"<|endoftext|>" in text is plain text, not the special token', () => {
    const ids = tk.encode(`a ${EOT_TEXT} b`);
    expect(ids).not.toContain(tk.eotToken);
    expect(tk.decode(ids)).toBe(`a ${EOT_TEXT} b`);
  });

  test('out-of-range ids are refused, naming the index', () => {
    expect(() => tk.decode([1, 50257])).toThrow(/ids\[1\]/);
    expect(() => tk.decode([-1])).toThrow(RangeError);
  });
});

describe('bytes tokenizer', () => {
  const tk = getTokenizer('bytes');

  test('vocabulary and end-of-text id', () => {
    expect(tk.vocabSize).toBe(257);
    expect(tk.eotToken).toBe(256);
  });

  test('ids are the UTF-8 bytes', () => {
    expect(tk.encode('Aé')).toEqual([0x41, 0xc3, 0xa9]);
  });

  test.each(samples)('round trip %j', (text) => {
    expect(tk.decode(tk.encode(text))).toBe(text);
  });

  test('end-of-text decodes to the marker between documents', () => {
    expect(tk.decode([256, ...tk.encode('ab'), 256, ...tk.encode('é')])).toBe(`${EOT_TEXT}ab${EOT_TEXT}é`);
    expect(() => tk.decode([257])).toThrow(RangeError);
  });
});

test('getTokenizer names a bad tokenizer', () => {
  expect(() => getTokenizer('sentencepiece')).toThrow(RangeError);
  expect(() => getTokenizer('sentencepiece')).toThrow(/"sentencepiece"/);
  expect(getTokenizer('gpt2')).toBe(getTokenizer('gpt2'));
});
