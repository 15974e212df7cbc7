// Starts Playwright's browser server for the package's remote-source tests
// and prints its WebSocket endpoint as one line. Arguments: the
// playwright-core package folder, the Chromium executable, the port (0:
// any), the WebSocket path. It runs until killed.
const [pkg, executablePath, port, wsPath] = process.argv.slice(2);
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
        args: ['--disable-gpu', '--no-first-run'],
        host: '127.0.0.1',
        port: Number(port),
        wsPath,
      });
      break;
    } catch (err) {
      if (attempt === 3) throw err;
      console.error(`launchServer attempt ${attempt} failed: ${err.message}`);
      await new Promise((r) => setTimeout(r, 250 * attempt));
    }
  }
  process.stdout.write(server.wsEndpoint() + '\n');
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
