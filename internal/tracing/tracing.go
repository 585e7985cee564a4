// Package tracing sets up OpenTelemetry traces from the standard OTEL_*
// environment variables: spans exported over OTLP/HTTP when an OTLP
// endpoint is set, nothing at all otherwise.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Enabled reports whether env asks for traces: OTEL_EXPORTER_OTLP_ENDPOINT
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, OTEL_SDK_DISABLED is not
// true and OTEL_TRACES_EXPORTER is not none.
func Enabled(env map[string]string) bool {
	if strings.EqualFold(strings.TrimSpace(env["OTEL_SDK_DISABLED"]), "true") ||
		strings.TrimSpace(env["OTEL_TRACES_EXPORTER"]) == "none" {
		return false
	}
	return env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "" || env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] != ""
}

// Check reports the variables of env that ask for what this package does
// not do: an exporter other than otlp, a protocol other than http/protobuf.
func Check(env map[string]string) error {
	var errs []error
	if v := strings.TrimSpace(env["OTEL_TRACES_EXPORTER"]); v != "" && v != "otlp" && v != "none" {
		errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", v))
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		if v := strings.TrimSpace(env[name]); v != "" && v != "http/protobuf" {
			errs = append(errs, fmt.Errorf("%s=%q: only http/protobuf is supported", name, v))
		}
	}
	return errors.Join(errs...)
}

// Provider is the process's tracer provider: an SDK one exporting over
// OTLP/HTTP, or none (tracing off). The zero Provider is off.
type Provider struct {
	sdk *sdktrace.TracerProvider
}

// Start returns the provider env asks for (see Enabled); service is the
// service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name
// one. The exporter, the sampler (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG; parentbased_always_on by default) and the batch
// span processor (OTEL_BSP_*) read their variables from the process
// environment. Off, it starts nothing.
func Start(ctx context.Context, env map[string]string, service string) (*Provider, error) {
	if err := Check(env); err != nil {
		return nil, err
	}
	if !Enabled(env) {
		return &Provider{}, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return &Provider{sdk: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// Enabled reports whether p records and exports spans.
func (p *Provider) Enabled() bool { return p.sdk != nil }

// Tracer returns the tracer of the named instrumentation scope, or nil
// when tracing is off: callers skip all tracing work on a nil tracer.
func (p *Provider) Tracer(name string) trace.Tracer {
	if p.sdk == nil {
		return nil
	}
	return p.sdk.Tracer(name)
}

// Shutdown exports the spans still buffered and stops the provider, within
// ctx.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.sdk == nil {
		return nil
	}
	return p.sdk.Shutdown(ctx)
}

// shutdownWait bounds how long Close waits for the spans still buffered.
const shutdownWait = 5 * time.Second

// Announce logs, when p is on, that spans are exported.
func (p *Provider) Announce(log *slog.Logger) {
	if p.Enabled() {
		log.Info("tracing: exporting spans over OTLP/HTTP (OTEL_* variables)")
	}
}

// Close sends the spans still buffered and stops p, waiting at most a few
// seconds, for the end of a process; a failure is logged.
func (p *Provider) Close(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Warn("tracing: shutdown", "error", err)
	}
}
