// Starts Playwright's browser server for cmd/bench and prints its
// WebSocket endpoint as one JSON line. Arguments: the playwright-core
// package folder, the Chromium executable, the Chromium flags as JSON.
// Closing stdin closes the server (and its Chromium) and exits.
const [pkg, executablePath, argsJSON] = process.argv.slice(2);
const { chromium } = require(pkg);

(async () => {
  const server = await chromium.launchServer({
    executablePath,
    headless: true,
    args: JSON.parse(argsJSON),
    host: '127.0.0.1',
    port: 0,
  });
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
