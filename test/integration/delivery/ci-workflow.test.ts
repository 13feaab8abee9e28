import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { ROOT } from "../../support/processes.ts";

interface Step {
	run?: string;
	uses?: string;
}
interface Workflow {
	on: { push: { tags: string[] } };
	jobs: Record<string, { steps: Step[]; services?: Record<string, { image: string }>; if?: string; needs?: string }>;
}

const workflow = parseYaml(readFileSync(path.join(ROOT, ".github/workflows/ci.yml"), "utf8")) as Workflow;
const ciRun = readFileSync(path.join(ROOT, ".ci/run"), "utf8");
const npmCommands = (text: string) => [...text.matchAll(/npm (ci|run lint|run typecheck|test)\b/g)].map(m => m[1]);

test("the GitHub workflow runs what .ci/run runs, in the same order", () => {
	const runs = workflow.jobs.test!.steps.map(s => s.run ?? "").join("\n");
	assert.deepEqual(npmCommands(runs), ["ci", "run lint", "run typecheck", "test"]);
	assert.deepEqual(npmCommands(ciRun), ["ci", "run lint", "run typecheck", "test"]);
});

test("tests run against NATS with JetStream, Redis and PostgreSQL", () => {
	const job = workflow.jobs.test!;
	assert.match(job.steps.map(s => s.run ?? "").join("\n"), /nats[^\n]*-js/);
	const images = Object.values(job.services ?? {}).map(s => s.image);
	assert.ok(images.some(i => i.startsWith("redis")));
	assert.ok(images.some(i => i.startsWith("postgres")));
});

test("the image is built and pushed on version tags only, after the tests, under the Dockerfile's image name", () => {
	const image = workflow.jobs.image!;
	assert.equal(image.needs, "test");
	assert.match(image.if ?? "", /refs\/tags\/v/);
	assert.deepEqual(workflow.on.push.tags, ["v*"]);
	const label = /io\.lattice\.image="([^"]+)"/.exec(readFileSync(path.join(ROOT, "Dockerfile"), "utf8"))?.[1];
	assert.ok(label, "Dockerfile declares its image name");
	const push = JSON.stringify(image.steps.find(s => s.uses?.startsWith("docker/build-push-action")));
	assert.ok(push.includes(label!), `pushes ${label}`);
});
