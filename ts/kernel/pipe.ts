// pipe(2): two files over one buffer (fs/pipe.c), enough for a file no live-update handler takes.
import { errno } from '../uapi/errno.js';
import { O_RDONLY, O_WRONLY } from '../uapi/mman.js';
import { File, type Task } from './file.js';

/** `PIPE_DEF_BUFFERS` pages. */
const PIPE_SIZE = 16 * 4096;

class PipeBuffer {
  data: Uint8Array[] = [];
  bytes = 0;
  readers = 1;
  writers = 1;
}

/** One end of a pipe. */
export class PipeFile extends File {
  constructor(
    private readonly buf: PipeBuffer,
    readonly end: 'read' | 'write',
  ) {
    super(end === 'read' ? O_RDONLY : O_WRONLY, 'pipe:');
  }
  read(_task: Task, n: number): Uint8Array {
    if (this.end !== 'read') errno('EBADF', 'the write end of a pipe');
    if (this.buf.bytes === 0) return this.buf.writers === 0 ? new Uint8Array(0) : errno('EAGAIN', 'the pipe is empty (a read would block)');
    const all = Buffer.concat(this.buf.data);
    const out = all.subarray(0, Math.min(n, all.length));
    this.buf.data = [all.subarray(out.length)];
    this.buf.bytes -= out.length;
    return new Uint8Array(out);
  }
  write(_task: Task, data: Uint8Array): number {
    if (this.end !== 'write') errno('EBADF', 'the read end of a pipe');
    if (this.buf.readers === 0) errno('EPIPE', 'no reader');
    const n = Math.min(data.length, PIPE_SIZE - this.buf.bytes);
    if (n === 0 && data.length) errno('EAGAIN', 'the pipe is full (a write would block)');
    this.buf.data.push(data.slice(0, n));
    this.buf.bytes += n;
    return n;
  }
  protected release(): void {
    if (this.end === 'read') this.buf.readers--;
    else this.buf.writers--;
  }
}

/** `create_pipe_files`: the read end and the write end. */
export function pipeFiles(): [PipeFile, PipeFile] {
  const b = new PipeBuffer();
  return [new PipeFile(b, 'read'), new PipeFile(b, 'write')];
}
