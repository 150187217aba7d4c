// A tiny SMTP server that keeps every message, for the server's mail (verification links).
import { createServer, type AddressInfo, type Server } from "node:net";

export interface Mail {
  from: string;
  to: string[];
  raw: string;
  /** The decoded text of every part (quoted-printable and base64 undone). */
  text: string;
}

export class SmtpCapture {
  readonly mails: Mail[] = [];
  private server: Server;
  private waiters: Array<() => void> = [];

  private constructor(server: Server) {
    this.server = server;
  }

  static async start(): Promise<SmtpCapture> {
    const server = createServer();
    const capture = new SmtpCapture(server);
    server.on("connection", (socket) => {
      socket.setEncoding("latin1");
      let buffer = "";
      let inData = false;
      let from = "";
      let to: string[] = [];
      socket.write("220 capture ESMTP\r\n");
      socket.on("data", (chunk: string) => {
        buffer += chunk;
        for (;;) {
          if (inData) {
            const end = buffer.indexOf("\r\n.\r\n");
            if (end < 0) return;
            const raw = buffer.slice(0, end).replace(/\r\n\.\./g, "\r\n.");
            buffer = buffer.slice(end + 5);
            inData = false;
            capture.push({ from, to, raw, text: decodeMessage(raw) });
            socket.write("250 OK queued\r\n");
            continue;
          }
          const eol = buffer.indexOf("\r\n");
          if (eol < 0) return;
          const line = buffer.slice(0, eol);
          buffer = buffer.slice(eol + 2);
          const verb = line.slice(0, 4).toUpperCase();
          if (verb === "EHLO") socket.write("250-capture\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
          else if (verb === "HELO") socket.write("250 capture\r\n");
          else if (verb === "MAIL") {
            from = line.replace(/^MAIL FROM:\s*/i, "");
            to = [];
            socket.write("250 OK\r\n");
          } else if (verb === "RCPT") {
            to.push(line.replace(/^RCPT TO:\s*<?([^>\s]*)>?.*$/i, "$1"));
            socket.write("250 OK\r\n");
          } else if (verb === "DATA") {
            inData = true;
            socket.write("354 End data with <CR><LF>.<CR><LF>\r\n");
          } else if (verb === "QUIT") {
            socket.end("221 Bye\r\n");
          } else socket.write("250 OK\r\n"); // RSET, NOOP, …
        }
      });
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return capture;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  private push(mail: Mail) {
    this.mails.push(mail);
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** The first mail to `address` matching `pattern`, waiting up to `timeoutMs` for it. */
  async waitFor(address: string, pattern: RegExp, timeoutMs = 15_000): Promise<Mail> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const mail = this.mails.find(
        (m) => m.to.some((t) => t.toLowerCase() === address.toLowerCase()) && pattern.test(m.text),
      );
      if (mail) return mail;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no mail to ${address} matching ${pattern} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Headers and bodies of every MIME part, with transfer encodings undone. */
export function decodeMessage(raw: string): string {
  const out: string[] = [];
  const walk = (entity: string) => {
    const split = entity.search(/\r?\n\r?\n/);
    const head = split < 0 ? entity : entity.slice(0, split);
    const body = split < 0 ? "" : entity.slice(split).replace(/^\r?\n\r?\n/, "");
    const headers = head.replace(/\r?\n[ \t]+/g, " ");
    const boundary = /content-type:\s*multipart\/[^\r\n]*boundary="?([^";\r\n]+)"?/i.exec(headers)?.[1];
    if (boundary) {
      for (const part of body.split(`--${boundary}`).slice(1)) {
        if (part.startsWith("--")) break;
        walk(part.replace(/^\r?\n/, ""));
      }
      return;
    }
    const encoding = /content-transfer-encoding:\s*([\w-]+)/i.exec(headers)?.[1]?.toLowerCase();
    out.push(headers);
    if (encoding === "base64") out.push(Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8"));
    else if (encoding === "quoted-printable") out.push(decodeQuotedPrintable(body));
    else out.push(body);
  };
  walk(raw);
  return out.join("\n");
}

function decodeQuotedPrintable(text: string): string {
  const bytes = text
    .replace(/=\r?\n/g, "")
    .replace(/=([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, "latin1").toString("utf8");
}
