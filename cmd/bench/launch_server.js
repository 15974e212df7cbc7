// Starts Playwright's browser server for cmd/bench and prints its
// WebSocket endpoint as one JSON line. Arguments: the playwright-core
// package folder, the Chromium executable, the Chromium flags as JSON.
// Closing stdin closes the server (and its Chromium) and exits.
const [pkg, executablePath, argsJSON] = process.argv.slice(2);
const { chromium } = require(pkg);

(async () => {
  // A Chromium that exits while it starts (seen on loaded CI machines) is
  // launched again, as the broker does; a broken setup fails 3 times.
  let server;
  for (let attempt = 1; ; attempt++) {
    try {
      server = await chromium.launchServer({
        executablePath,
        headless: true,
        args: JSON.parse(argsJSON),
        host: '127.0.0.1',
        port: 0,
      });
      break;
    } catch (err) {
      if (attempt === 3) throw err;
      console.error(`launchServer attempt ${attempt} failed: ${err.message}`);
      await new Promise((r) => setTimeout(r, 250 * attempt));
    }
  }
  process.stdout.write(JSON.stringify({ wsEndpoint: server.wsEndpoint() }) + '\n');
  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    await server.close();
    process.exit(0);
  };
  process.stdin.on('end', close);
  process.stdin.on('error', close);
  process.stdin.resume();
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
