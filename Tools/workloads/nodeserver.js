// A node TCP server and its clients in one program, with timers, for checkpoint tests: a server on
// 127.0.0.1 (a port the kernel picks) and three clients taking turns, each sending a line and
// reading a large answer over its own connection; every answer depends on all its connection
// carried before, and every printed line on all of it, so a restored connection that lost,
// repeated or reordered a byte prints other lines than a plain run.
//
//   node nodeserver.js ROUNDS
const net = require("net");
const crypto = require("crypto");
const rounds = Number(process.argv[2] || 40);
const sha = (s) => crypto.createHash("sha256").update(s).digest("hex");

const server = net.createServer((socket) => {
    let state = sha("server");
    let pending = "";
    socket.on("data", (chunk) => {
        pending += chunk.toString();
        let nl;
        while ((nl = pending.indexOf("\n")) >= 0) {
            const line = pending.slice(0, nl);
            pending = pending.slice(nl + 1);
            state = sha(state + line);
            socket.write(state.repeat(200) + "\n");  // large: it fills the buffers
        }
    });
});

function client(port, name) {
    const socket = net.connect(port, "127.0.0.1");
    let state = sha(name);
    let buffered = "";
    let waiting = null;
    socket.on("data", (chunk) => {
        buffered += chunk.toString();
        const nl = buffered.indexOf("\n");
        if (nl >= 0 && waiting) {
            const answer = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            const done = waiting;
            waiting = null;
            done(answer);
        }
    });
    return {
        ask: (i) => new Promise((resolve) => {
            waiting = (answer) => {
                state = sha(state + answer);
                console.log(`${name} round ${i} ${state.slice(0, 16)}`);
                resolve();
            };
            socket.write(`${name} ${i} ${state.slice(0, 8)}\n`);
        }),
        end: () => socket.end(),
    };
}

server.listen(0, "127.0.0.1", async () => {
    const port = server.address().port;
    const clients = ["a", "b", "c"].map((n) => client(port, n));
    for (let i = 0; i < rounds; i++) {
        for (const c of clients) {
            await c.ask(i);
            await new Promise((resolve) => setTimeout(resolve, 10));
        }
    }
    clients.forEach((c) => c.end());
    server.close();
    console.log(`done after ${rounds} rounds`);
});
