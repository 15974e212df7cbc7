// Starts Playwright's browser server for the package's remote-source tests
// and prints its WebSocket endpoint as one line. Arguments: the
// playwright-core package folder, the Chromium executable, the port (0:
// any), the WebSocket path. It runs until killed.
const [pkg, executablePath, port, wsPath] = process.argv.slice(2);
const { chromium } = require(pkg);

(async () => {
  const server = await chromium.launchServer({
    executablePath,
    headless: true,
    args: ['--disable-gpu', '--no-first-run'],
    host: '127.0.0.1',
    port: Number(port),
    wsPath,
  });
  process.stdout.write(server.wsEndpoint() + '\n');
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
