// Runs fn, which must throw an RpcError, and returns that error (for asserting its status and reason).
import { RpcError } from '../../src/swarm/rpc-error';

export function refusal(fn: () => unknown): RpcError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RpcError);
    return e as RpcError;
  }
  throw new Error('expected a refusal');
}
