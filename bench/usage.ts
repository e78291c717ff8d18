// A wrong bench argument: reported as one line and exit code 2 by bench/run.ts, before anything starts.
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Runs `main`; a UsageError is printed (no stack) and sets exit code 2, anything else propagates. */
export async function reportUsage(main: () => Promise<void>): Promise<boolean> {
  try {
    await main();
    return true;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`bench: ${err.message}`);
    process.exitCode = 2;
    return false;
  }
}
