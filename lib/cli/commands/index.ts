/** Every `vhost-user` subcommand, in `--help` order. A new command is a module here. */
import type { AnyCommand } from '../command.js';
import netRecv from './net-recv.js';
import netSend from './net-send.js';
import probe from './probe.js';
import serve from './serve.js';
import demo from './demo.js';
import conformance from './conformance.js';
import trace from './trace.js';
import blkInfo from './blk-info.js';
import blkRead from './blk-read.js';
import blkWrite from './blk-write.js';
import blkVerify from './blk-verify.js';

// Each command's options type differs; dispatch only needs the common shape.
export const commands: readonly AnyCommand[] = [probe, netSend, netRecv, blkInfo, blkRead, blkWrite, blkVerify, serve, demo, conformance, trace];
