// One end of a single TCP stream, to measure a shaped link's goodput (the limit of the shaped all-reduce
// rows). bench/allreduce.ts runs the receiver in one host namespace and the sender in another.
//   node tcp-stream.js recv PORT BYTES        listens; prints {"event":"listening"}; after BYTES arrive prints
//                                             {"event":"done","bytes":B,"seconds":S} (S from the accept to the last byte)
//   node tcp-stream.js send HOST PORT BYTES   connects and writes BYTES in 1 MiB writes, honouring backpressure
import net from 'node:net';

const CHUNK = 1 << 20;

function recv(port: number, bytes: number): void {
  const server = net.createServer((sock) => {
    const t0 = performance.now();
    let got = 0;
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= bytes) {
        const seconds = (performance.now() - t0) / 1e3;
        process.stdout.write(`${JSON.stringify({ event: 'done', bytes: got, seconds })}\n`);
        sock.destroy();
        server.close();
      }
    });
  });
  server.listen(port, '0.0.0.0', () => process.stdout.write(`${JSON.stringify({ event: 'listening' })}\n`));
}

function send(host: string, port: number, bytes: number): void {
  const buf = Buffer.alloc(CHUNK, 0x5a);
  let left = bytes;
  const sock = net.connect(port, host, () => {
    const pump = () => {
      while (left > 0) {
        const len = Math.min(CHUNK, left);
        left -= len;
        if (!sock.write(len === CHUNK ? buf : buf.subarray(0, len))) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  });
  sock.on('error', (e) => {
    if (left === 0) return;  // the receiver closes as soon as it has every byte
    process.stderr.write(`tcp-stream send: ${e.message}\n`);
    process.exitCode = 1;
  });
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'recv') recv(Number(rest[0]), Number(rest[1]));
else if (mode === 'send') send(rest[0], Number(rest[1]), Number(rest[2]));
else {
  process.stderr.write('usage: tcp-stream.js recv PORT BYTES | send HOST PORT BYTES\n');
  process.exitCode = 2;
}
