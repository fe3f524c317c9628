#!/usr/bin/env node
// covenant command line: dispatches to one module per command and maps errors to exit codes
// (0 success, 1 failure, 2 usage mistake).
import { UsageError } from './args';
import { runCoordinator } from './coordinator';
import { runDataPrepare } from './data-prepare';
import { runDemo } from './demo';
import { runIdentity } from './identity';
import { runLedger } from './ledger';
import { runSample } from './sample';
import { runTrain } from './train';
import { runWorker } from './worker';
import { CovenantError, errorMessage } from '../errors';

const USAGE = `covenant — worker software for decentralized LLM pre-training

usage:
  covenant data prepare --input PATH... --tokenizer gpt2|bytes --out DIR   tokenize text into shards
  covenant train --data DIR --out DIR [--preset tiny|small|gpt2]           train locally
  covenant sample --checkpoint FILE --prompt TEXT                          generate text
  covenant coordinator --config FILE --state DIR [--listen HOST:PORT]      serve a run (members, plans, state)
  covenant worker --join HOST:PORT --run-id ID --data DIR --state DIR      train in a run's rounds
  covenant demo [--workers N --rounds N --churn]                          a coordinator and 3 workers train on Brown
  covenant ledger verify|balances|show FILE                                audit a run's credit ledger
  covenant identity --state DIR                                            print a worker's peer id
  covenant version

Run a command with --help for its flags.`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'train':
      return runTrain(rest);
    case 'sample':
      return runSample(rest);
    case 'coordinator':
      return runCoordinator(rest);
    case 'worker':
      return runWorker(rest);
    case 'demo':
      return runDemo(rest);
    case 'ledger':
      return runLedger(rest);
    case 'identity':
      return runIdentity(rest);
    case 'data':
      if (rest[0] === 'prepare') return runDataPrepare(rest.slice(1));
      throw new UsageError(`unknown command: data ${rest[0] ?? ''} (did you mean \`covenant data prepare\`?)`);
    case 'version':
    case '--version':
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      console.log(require('../../../package.json').version);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command: ${cmd}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      console.error(`covenant: ${e.message}\nRun \`covenant --help\` or \`covenant COMMAND --help\`.`);
      process.exitCode = 2;
    } else if (e instanceof CovenantError) {
      console.error(`covenant: error [${e.code}]: ${e.message}`);
      process.exitCode = 1;
    } else {
      console.error(`covenant: error: ${errorMessage(e)}`);
      process.exitCode = 1;
    }
  },
);
