/**
 * Milliseconds since the epoch with sub-millisecond resolution, comparable across worker threads (each thread's
 * performance.now() counts from its own origin).
 */
export function wallNow(): number {
	return performance.timeOrigin + performance.now();
}
