// An event loop at work, for checkpoint tests: interval and timeout timers, promises, the worker
// pool (crypto hashes and file writes run on libuv's threads) and a signal handler, printing one
// line per tick; every line depends on all the ticks before it, so a restore that lost or repeated
// anything prints different lines from a plain run.
//
//   node nodetimers.js TICKS SCRATCH_FILE
const crypto = require("crypto");
const fs = require("fs");
const ticks = Number(process.argv[2] || 40);
const scratch = process.argv[3];
let state = crypto.createHash("sha256").update("start").digest("hex");
process.on("SIGUSR2", () => console.log("SIGUSR2"));
let n = 0;
function step() {
    return new Promise((resolve) => setTimeout(resolve, 10))
        .then(() => new Promise((resolve, reject) =>
            crypto.pbkdf2(state, "salt" + n, 2000, 32, "sha256", (err, key) => (err ? reject(err) : resolve(key.toString("hex"))))))
        .then((key) => new Promise((resolve, reject) =>
            fs.writeFile(scratch, key, (err) => (err ? reject(err) : fs.readFile(scratch, "utf8", (e, text) => (e ? reject(e) : resolve(text)))))));
}
// Ticks one after another (each schedules the next once done), beside an interval timer that
// only keeps the loop busy.
const busy = setInterval(() => {}, 7);
function tick() {
    const i = n++;
    step().then((text) => {
        state = crypto.createHash("sha256").update(state + text).digest("hex");
        console.log(`tick ${i} ${state.slice(0, 16)}`);
        if (i + 1 < ticks) {
            setTimeout(tick, 50);
        } else {
            clearInterval(busy);
            console.log(`done after ${ticks} ticks`);
        }
    });
}
tick();
