// Tests for the Brown corpus reader: tags stripped, text detokenized into plausible English.
import { brownDocuments, detokenize, untagBrown } from '../src/data/brown';

describe('untagBrown', () => {
  test('strips tags, joins punctuation and quotes, splits paragraphs and headlines', () => {
    const tagged = [
      '',
      "\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc it/pps didn't/dod* ./.",
      'It/pps ended/vbd (/( 2/cd )/) ;/. see/vb 1-1/2/cd inches/nns ./.',
      '',
      '',
      'Merger/nn-hl proposed/vbn-hl',
      'However/wrb ,/, Mr./np ./.',
    ].join('\n');
    expect(untagBrown(tagged)).toBe(
      'The Fulton jury said "no evidence," and it didn\'t. It ended (2); see 1-1/2 inches.\n\nMerger proposed\n\nHowever, Mr.',
    );
  });

  test('detokenize', () => {
    expect(detokenize(['``', 'Hi', "''", ',', 'he', 'said', '!'])).toBe('"Hi," he said!');
    expect(detokenize(['Is', 'it', '``', 'this', "''", '?', '?'])).toBe('Is it "this?"');
    expect(detokenize(['a', ';', ';', 'b'])).toBe('a; b');
    expect(detokenize(['the', "'", 'spirit', "'", 'of', 'peddlers', "'", 'carts'])).toBe("the 'spirit' of peddlers' carts");
    expect(detokenize(['a', '--', 'b', "'em"])).toBe("a -- b 'em");
  });
});

describe('brownDocuments', () => {
  const docs = brownDocuments();

  test('500 texts, ids by genre and number', () => {
    expect(docs).toHaveLength(500);
    expect(docs[0].id).toBe('brown/ca01');
    expect(docs[499].id).toBe('brown/cr09');
    expect(new Set(docs.map((d) => d.id)).size).toBe(500);
  });

  test('no part-of-speech tag residue', () => {
    expect(docs.length).toBeGreaterThan(0);
    // (The corpus has real slashes too: "1-1/2", phonemes like "/r/.")
    const tagLike = /[A-Za-z0-9]\/(at|nn|nns|np|vbd|vb|in|jj|cc|rb|pps|dt|cs|nn-tl|np\$)(?=[\s,.]|$)/;
    for (const d of docs) {
      expect(tagLike.test(d.text)).toBe(false);
      expect(d.text).not.toContain('``');
    }
  });

  test('plausible English', () => {
    const first = docs[0].text;
    expect(first.startsWith('The Fulton County Grand Jury said Friday an investigation of')).toBe(true);
    expect(first).toContain('"no evidence"');
    expect(first).toContain('\n\n');
    const all = docs.map((d) => d.text).join('\n');
    const words = all.split(/\s+/).filter(Boolean);
    expect(words.length).toBeGreaterThan(900_000);
    const common = words.filter((w) => /^(the|of|and|to|a|in)$/i.test(w)).length;
    expect(common / words.length).toBeGreaterThan(0.12);
    // One legitimate case in the corpus: a time written ":35.3".
    expect((all.match(/ [,.;:?!]/g) ?? []).length).toBeLessThan(5);
    expect(all).not.toMatch(/[;?!]{2}/);
  });
});
