/**
 * A small WebSocket client (RFC 6455) on node:http, for `krafter listen`: Node 20 has no
 * global WebSocket, and the project adds no dependency for one. It sends headers of its
 * own (Authorization), hands back the relay's error envelope when the upgrade is refused,
 * and speaks what the listener needs: text messages (fragmented or not, up to 64 MiB),
 * ping/pong and close. No extensions are offered, so frames are never compressed.
 */
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };

/** The upgrade was answered with something else than 101: its status and body (the relay's error envelope). */
export class UpgradeRefused extends Error {
  constructor(status, body) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * Opens a WebSocket to an http(s) URL. Resolves with the connection once the handshake
 * is done; rejects with UpgradeRefused (an HTTP answer) or the transport's error.
 */
export function connectWebSocket(url, { headers = {}, timeoutMs = 15_000 } = {}) {
  const u = new URL(url);
  const key = randomBytes(16).toString("base64");
  const request = u.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(u, {
      method: "GET",
      headers: {
        ...headers,
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-key": key,
        "sec-websocket-version": "13",
      },
      timeout: timeoutMs,
    });
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      reject(err);
    };
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", fail);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        if (body.length < 65_536) body += d;
      });
      res.on("end", () => fail(new UpgradeRefused(res.statusCode ?? 0, body)));
      res.on("error", fail);
    });
    req.on("upgrade", (res, socket, head) => {
      const expected = createHash("sha1").update(key + GUID).digest("base64");
      if (res.headers["sec-websocket-accept"] !== expected) {
        socket.destroy();
        return fail(new Error("the server's handshake is not a WebSocket one"));
      }
      settled = true;
      resolve(new WebSocketConnection(socket, head));
    });
    req.end();
  });
}

/**
 * Events: "message" (text), "pong", "close" (code, reason) exactly once, whether the
 * close was clean or the connection dropped (1006). Nothing is read before `start()`, so
 * a frame that came with the handshake (the relay's "ready") waits for the listeners.
 */
export class WebSocketConnection extends EventEmitter {
  constructor(socket, head) {
    super();
    this.socket = socket;
    this.buffer = head && head.length > 0 ? Buffer.from(head) : Buffer.alloc(0);
    this.fragments = null;
    this.closed = false;
    this.closeSent = false;
    socket.setNoDelay(true);
    socket.pause();
    socket.on("error", () => this.finish(1006, "connection error"));
    socket.on("close", () => this.finish(1006, "connection lost"));
  }

  /** Starts reading: call it once the listeners are on. */
  start() {
    this.socket.on("data", (d) => {
      this.buffer = this.buffer.length === 0 ? d : Buffer.concat([this.buffer, d]);
      this.parse();
    });
    // Frames that came with the handshake first.
    if (this.buffer.length > 0) this.parse();
    this.socket.resume();
    return this;
  }

  get open() {
    return !this.closed && !this.closeSent;
  }

  send(text) {
    if (!this.open) return false;
    this.frame(OP.text, Buffer.from(text, "utf8"));
    return true;
  }

  ping(text = "") {
    if (this.open) this.frame(OP.ping, Buffer.from(text, "utf8"));
  }

  /** A clean close: our close frame, then the socket ends once the server answers (or after a second). */
  close(code = 1000, reason = "") {
    if (this.closed) return;
    if (!this.closeSent) {
      this.closeSent = true;
      const r = Buffer.from(reason, "utf8").subarray(0, 123);
      const payload = Buffer.alloc(2 + r.length);
      payload.writeUInt16BE(code, 0);
      r.copy(payload, 2);
      this.frame(OP.close, payload);
    }
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Drops the connection at once (a dead peer). */
  terminate() {
    this.socket.destroy();
    this.finish(1006, "terminated");
  }

  finish(code, reason, linger = false) {
    if (this.closed) return;
    this.closed = true;
    // After a close handshake the socket ends by itself; a second at most.
    if (linger) setTimeout(() => this.socket.destroy(), 1000).unref();
    else this.socket.destroy();
    this.emit("close", code, reason);
  }

  frame(opcode, payload) {
    const mask = randomBytes(4);
    const len = payload.length;
    const header = len < 126 ? Buffer.alloc(2) : len < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    if (len < 126) header[1] = 0x80 | len;
    else if (len < 65_536) {
      header[1] = 0x80 | 126;
      header.writeUInt16BE(len, 2);
    } else {
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(len), 2);
    }
    const masked = Buffer.alloc(len);
    for (let i = 0; i < len; i++) masked[i] = payload[i] ^ mask[i & 3];
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  parse() {
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(MAX_MESSAGE_BYTES)) return this.fail(1009, "message too large");
        len = Number(big);
        offset = 10;
      }
      const maskKey = masked ? b.subarray(offset, offset + 4) : null;
      if (masked) offset += 4;
      if (b.length < offset + len) return;
      let payload = b.subarray(offset, offset + len);
      if (maskKey) payload = Buffer.from(payload.map((x, i) => x ^ maskKey[i & 3]));
      this.buffer = b.subarray(offset + len);
      this.handle(fin, opcode, payload);
      if (this.closed) return;
    }
  }

  handle(fin, opcode, payload) {
    switch (opcode) {
      case OP.text:
      case OP.binary:
      case OP.continuation: {
        if (opcode !== OP.continuation) this.fragments = { opcode, parts: [], size: 0 };
        if (!this.fragments) return this.fail(1002, "continuation without a message");
        this.fragments.parts.push(Buffer.from(payload));
        this.fragments.size += payload.length;
        if (this.fragments.size > MAX_MESSAGE_BYTES) return this.fail(1009, "message too large");
        if (!fin) return;
        const { opcode: kind, parts } = this.fragments;
        this.fragments = null;
        // Binary messages mean nothing to the listener: only text is emitted.
        if (kind === OP.text) this.emit("message", Buffer.concat(parts).toString("utf8"));
        return;
      }
      case OP.ping:
        if (this.open) this.frame(OP.pong, payload);
        return;
      case OP.pong:
        this.emit("pong");
        return;
      case OP.close: {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.length > 2 ? payload.subarray(2).toString("utf8") : "";
        if (!this.closeSent) {
          this.closeSent = true;
          const echo = Buffer.alloc(2);
          echo.writeUInt16BE(code === 1005 ? 1000 : code, 0);
          this.frame(OP.close, echo);
        }
        this.socket.end();
        this.finish(code, reason, true);
        return;
      }
      default:
        this.fail(1002, `unknown opcode ${opcode}`);
    }
  }

  fail(code, reason) {
    this.close(code, reason);
    this.finish(code, reason);
  }
}
