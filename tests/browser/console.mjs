// Drives Debian's chromium, headless, through the console: signs in with the token, finds
// a failed payment by its key and reads the 402 in its timeline, retries a dead letter,
// takes the README's screenshot, and checks that a read-only console offers no action.
// Run by tests/tests/console.rs, which prepares the data and checks what follows.
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const [url, readOnlyUrl, token] = [need('CONSOLE_URL'), need('READONLY_URL'), need('CONSOLE_TOKEN')];
const [paymentKey, deadId, screenshot] = [need('PAYMENT_KEY'), need('DEAD_ID'), need('SCREENSHOT')];

const check = (ok, what) => {
  if (!ok) throw new Error(`failed: ${what}`);
  console.log(`ok: ${what}`);
};

const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'console-chromium-')), {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 820 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const signIn = async (base) => {
    await browser.clearCookies();
    const response = await page.goto(base + '/');
    check(response.status() === 401 && (await page.content()).includes('Sign in'), `${base}: the token is asked for`);
    await page.fill('input[name=token]', 'not the token');
    await page.click('button[type=submit]');
    check((await page.content()).includes('That is not the token.'), `${base}: a wrong token is refused`);
    await page.fill('input[name=token]', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1:has-text("Overview")');
  };

  await signIn(url);
  const deadCount = await page.locator('.card', { hasText: 'dead letters' }).locator('b').innerText();
  check(deadCount.trim() === '2', `the overview counts the two dead letters (${deadCount})`);
  check((await page.locator('svg rect').count()) >= 60, 'the overview draws its charts');
  await page.screenshot({ path: screenshot });
  console.log(`ok: screenshot at ${screenshot}`);

  await page.click('nav >> text=Workflows');
  await page.fill('input[name=key]', paymentKey);
  await page.click('button:has-text("Find")');
  const rows = page.locator('tbody tr');
  check((await rows.count()) === 1, 'the payment is found by its key');
  await rows.first().locator('a').first().click();
  await page.waitForSelector('h2:has-text("Timeline")');
  const timeline = await page.locator('table').nth(1).innerText();
  check(timeline.includes('402') && timeline.includes('card_declined'), "the timeline shows the provider's 402 and its body");
  check(await page.isVisible('h1 span.status-failed'), 'the payment shows as failed');

  await page.goto(url + '/messages?status=dead');
  const dead = page.locator('tbody tr', {
    has: page.locator('b.message-id', { hasText: new RegExp(`^${deadId}$`) }),
  });
  check((await dead.count()) >= 1, `dead letter ${deadId} is listed`);
  await dead.first().locator('button:has-text("Retry")').click();
  await page.waitForSelector('h1:has-text("Done")');
  check((await page.content()).includes(`Message ${deadId} is pending again.`), 'the dead letter is retried');

  await signIn(readOnlyUrl);
  await page.goto(readOnlyUrl + '/messages?status=dead');
  check((await page.locator('tbody tr').count()) === 1, 'the other dead letter is listed read-only');
  check((await page.locator('form[method=post]').count()) === 0
        && (await page.locator('button:has-text("Retry")').count()) === 0, 'a read-only console offers no action');
  await page.goto(readOnlyUrl + '/endpoints');
  check((await page.locator('form[method=post]').count()) === 0, 'nor on its destinations');
  check((await page.content()).includes('read-only'), 'a read-only console says so');
} finally {
  await browser.close();
}
