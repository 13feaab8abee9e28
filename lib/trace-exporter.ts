import os from "node:os";
import { createRequire } from "node:module";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { OTLPTraceExporter as OTLPJsonTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPExporterBase } from "@opentelemetry/otlp-exporter-base";
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from "@opentelemetry/otlp-exporter-base/node-http";
import { TraceExporterMetricsHelper } from "@opentelemetry/otlp-transformer";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import { defaultResource, resourceFromAttributes, type Resource } from "@opentelemetry/resources";
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter, type SpanProcessor } from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { createOtlpProtobufTraceSerializer } from "./otlp-protobuf.serializer.ts";
import type { Topology } from "./settings.ts";
import type { OtlpProtocol, SpanExport } from "./tracer.ts";

/**
 * The OpenTelemetry side of Lattice tracing: where finished spans go (OTLP/HTTP JSON or Zipkin v2, behind
 * OpenTelemetry's BatchSpanProcessor) and the resource that says which process produced them.
 *
 * Loaded only by nodes that export spans (middlewares/tracing.middleware.ts imports it when the broker starts):
 * the SDK and its exporters are some 300 modules, 100–170 ms of start-up CPU and 6–10 MiB of heap (with and
 * without Node's compile cache), that a node which only propagates trace context never uses.
 */

export type ExporterSpec =
	/**
	 * OTLP/HTTP; `url` is the full traces endpoint (…/v1/traces). Protobuf bodies unless `protocol` says JSON:
	 * protobuf is the OTLP default and, measured here, about 13× cheaper to encode per span (Lattice's encoder against
	 * OpenTelemetry's JSON one) and 2.4× smaller.
	 */
	| { kind: "otlp"; url: string; timeoutMillis?: number; protocol?: OtlpProtocol }
	/** Zipkin v2 JSON; `url` is the spans endpoint (…/api/v2/spans). */
	| { kind: "zipkin"; url: string }
	/** Any OpenTelemetry SpanExporter (tests use the in-memory one). */
	| { kind: "custom"; exporter: SpanExporter };

/** OTEL_BSP_* equivalents. Memory is bounded by maxQueueSize spans plus the batches being sent. */
export interface BatchOptions {
	maxQueueSize?: number;
	maxExportBatchSize?: number;
	scheduledDelayMillis?: number;
	exportTimeoutMillis?: number;
}

export interface ExportHooks {
	/** A batch of `count` spans was accepted by the collector. */
	exported(count: number): void;
	/** A batch of `count` spans was given up on after the retries. */
	failed(count: number, error: Error | undefined): void;
}

interface RetryOptions {
	attempts: number;
	initialDelayMs: number;
	maxDelayMs: number;
	/** Give up before the batch processor's export timeout abandons the batch anyway. */
	budgetMs: number;
}

/**
 * Retries failed batches with exponential backoff and jitter. The OTLP exporter does this itself; the Zipkin
 * one does not. The batch processor sends one batch at a time, so a retrying batch holds back the next ones and
 * the queue (bounded) absorbs or drops spans meanwhile: never unbounded memory, never a blocked request.
 */
class RetryingExporter implements SpanExporter {
	private readonly inner: SpanExporter;
	private readonly opts: RetryOptions;
	private stopped = false;

	constructor(inner: SpanExporter, opts: RetryOptions) {
		this.inner = inner;
		this.opts = opts;
	}

	export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
		const deadline = Date.now() + this.opts.budgetMs;
		let delay = this.opts.initialDelayMs;
		const attempt = (n: number) =>
			this.inner.export(spans, result => {
				if (result.code === ExportResultCode.SUCCESS || n >= this.opts.attempts || this.stopped) return done(result);
				const wait = Math.min(delay * (0.8 + Math.random() * 0.4), this.opts.maxDelayMs);
				delay *= 2;
				if (Date.now() + wait > deadline) return done(result);
				setTimeout(() => attempt(n + 1), wait).unref();
			});
		attempt(1);
	}

	shutdown(): Promise<void> {
		this.stopped = true;
		return this.inner.shutdown();
	}

	forceFlush(): Promise<void> {
		return this.inner.forceFlush?.() ?? Promise.resolve();
	}
}

/** Reports each batch's outcome (for metrics and logs) without changing it. */
class ObservedExporter implements SpanExporter {
	private readonly inner: SpanExporter;
	private readonly hooks: ExportHooks;

	constructor(inner: SpanExporter, hooks: ExportHooks) {
		this.inner = inner;
		this.hooks = hooks;
	}

	export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
		this.inner.export(spans, result => {
			if (result.code === ExportResultCode.SUCCESS) this.hooks.exported(spans.length);
			else this.hooks.failed(spans.length, result.error);
			done(result);
		});
	}

	shutdown(): Promise<void> {
		return this.inner.shutdown();
	}

	forceFlush(): Promise<void> {
		return this.inner.forceFlush?.() ?? Promise.resolve();
	}
}

export const DEFAULT_BATCH: Required<BatchOptions> = {
	maxQueueSize: 2048,
	maxExportBatchSize: 512,
	scheduledDelayMillis: 5000,
	exportTimeoutMillis: 30_000
};

function exporterFor(spec: ExporterSpec, serviceName: string, batch: Required<BatchOptions>): SpanExporter {
	switch (spec.kind) {
		case "otlp":
			// Its transport retries refused connections, timeouts and 429/502/503/504 with backoff (1 s ×1.5,
			// up to 5 attempts) within timeoutMillis; at most 30 requests are in flight.
			return spec.protocol === "http/json"
				? new OTLPJsonTraceExporter({ url: spec.url, timeoutMillis: spec.timeoutMillis ?? 10_000 })
				: otlpProtobufExporter(spec.url, spec.timeoutMillis ?? 10_000);
		case "zipkin":
			return new RetryingExporter(new ZipkinExporter({ url: spec.url, serviceName }), {
				attempts: 5,
				initialDelayMs: 500,
				maxDelayMs: 5000,
				budgetMs: batch.exportTimeoutMillis - 1000
			});
		case "custom":
			return spec.exporter;
	}
}

/**
 * What @opentelemetry/exporter-trace-otlp-proto's exporter is (OpenTelemetry's OTLP/HTTP transport: retries,
 * timeouts, OTEL_EXPORTER_OTLP_* headers and compression), with Lattice's encoder in place of its serializer
 * (lib/otlp-protobuf.serializer.ts: the same bytes at about 40 % of the CPU).
 */
function otlpProtobufExporter(url: string, timeoutMillis: number): SpanExporter {
	const options = convertLegacyHttpOptions({ url, timeoutMillis }, "TRACES", "v1/traces", { "Content-Type": "application/x-protobuf" });
	const delegate = createOtlpHttpExportDelegate(options, createOtlpProtobufTraceSerializer(), "otlp_http_span_exporter", TraceExporterMetricsHelper, undefined);
	return new OTLPExporterBase<ReadableSpan[]>(delegate);
}

export function createSpanProcessor(spec: ExporterSpec, serviceName: string, batch: BatchOptions, hooks: ExportHooks): SpanProcessor {
	const b = { ...DEFAULT_BATCH, ...batch };
	return new BatchSpanProcessor({
		exporter: new ObservedExporter(exporterFor(spec, serviceName, b), hooks),
		maxQueueSize: b.maxQueueSize,
		maxExportBatchSize: Math.min(b.maxExportBatchSize, b.maxQueueSize),
		scheduledDelayMillis: b.scheduledDelayMillis,
		exportTimeoutMillis: b.exportTimeoutMillis
	});
}

export interface ResourceIdentity {
	serviceName: string;
	serviceVersion?: string;
	namespace: string;
	nodeID: string;
	topology: Topology;
	/** OTEL_RESOURCE_ATTRIBUTES: wins over everything derived here except the service name. */
	attributes?: Record<string, string>;
}

/** This application's version (package.json), the default `service.version`. */
export function appVersion(): string {
	return (createRequire(import.meta.url)("../package.json") as { version: string }).version;
}

/**
 * The resource every span of this node carries: service, node id (service.instance.id), region/zone
 * (cloud.region, cloud.availability_zone), Lattice site and role, host and runtime. Precedence, lowest first:
 * SDK defaults, what Lattice knows, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME (as the spec orders them).
 */
export function buildResource(id: ResourceIdentity): Resource {
	const derived: Record<string, string | number> = {
		[ATTR_SERVICE_VERSION]: id.serviceVersion ?? appVersion(),
		"service.instance.id": id.nodeID,
		"cloud.region": id.topology.region,
		"cloud.availability_zone": id.topology.zone,
		"lattice.site": id.topology.site,
		"lattice.role": id.topology.role,
		"host.name": os.hostname(),
		"process.pid": process.pid,
		"process.runtime.name": "nodejs",
		"process.runtime.version": process.versions.node
	};
	if (id.namespace) derived["service.namespace"] = id.namespace;
	return defaultResource()
		.merge(resourceFromAttributes(derived))
		.merge(resourceFromAttributes(id.attributes ?? {}))
		.merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: id.serviceName }));
}

/** Everything a tracer needs to export: the batching exporter, the resource and the instrumentation scope. */
export function createSpanExport(spec: ExporterSpec, id: ResourceIdentity, batch: BatchOptions, hooks: ExportHooks): SpanExport {
	const resource = buildResource(id);
	return {
		processor: createSpanProcessor(spec, id.serviceName, batch, hooks),
		resource,
		scope: { name: "lattice", version: resource.attributes[ATTR_SERVICE_VERSION] as string }
	};
}
