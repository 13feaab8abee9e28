/**
 * Lattice's test kit: start Lattice nodes as real processes, private nats-server and redis-server instances on
 * free ports, break them (kill -9, SIGTERM, freeze, restart), and keep steady load on them with counters.
 * Import it from your own tests; see test/support/README.md.
 */
export * from "./processes.ts";
export * from "./cluster.ts";
export * from "./chaos.ts";
export * from "./load.ts";
export * from "./auth.ts";
