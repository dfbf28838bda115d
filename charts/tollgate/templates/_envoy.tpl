{{/*
Envoy's bootstrap for the pod: envoy/envoy.yaml at the repository root, with the values below filled in
(that file explains every setting; test/unit/deploy/helm-chart.test.ts holds the two equal for the default
values). tollgate runs in the same pod, so both tollgate clusters point at 127.0.0.1.
max_request_bytes follows config.general_settings.max_request_size_mb (tollgate's own limit, 4 MiB by default);
the overload manager's heap cap follows envoy.resources.limits.memory (tollgate.envoyMaxHeapBytes);
xff_num_trusted_hops is envoy.xffNumTrustedHops; envoy.tls.secretName adds a DownstreamTlsContext to the
client listener, reading the Secret the Deployment mounts at /etc/envoy-tls.
*/}}
{{- define "tollgate.envoyConfig" -}}
{{- $gs := .Values.config.general_settings | default dict -}}
{{- $maxRequestBytes := int (mulf (default 4 $gs.max_request_size_mb) 1048576) -}}
node:
  id: tollgate-envoy
  cluster: tollgate

admin:
  # Loopback only; the kubelet and Prometheus use the envoy_stats listener (:9902).
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }

overload_manager:
  resource_monitors:
    - name: envoy.resource_monitors.global_downstream_max_connections
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
        max_active_downstream_connections: 50000
    # ext_authz buffers bodies before authentication: cap the heap (see envoy.overload in values.yaml).
    - name: envoy.resource_monitors.fixed_heap
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
        max_heap_size_bytes: {{ include "tollgate.envoyMaxHeapBytes" . }}
  actions:
    - name: envoy.overload_actions.shrink_heap
      triggers:
        - name: envoy.resource_monitors.fixed_heap
          threshold: { value: 0.95 }
    - name: envoy.overload_actions.stop_accepting_requests
      triggers:
        - name: envoy.resource_monitors.fixed_heap
          threshold: { value: 0.98 }

static_resources:
  listeners:
    - name: ingress_http
      address:
        socket_address: { address: 0.0.0.0, port_value: 10000 }
      per_connection_buffer_limit_bytes: 32768
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                codec_type: AUTO
                use_remote_address: true
                xff_num_trusted_hops: {{ int .Values.envoy.xffNumTrustedHops }}
                generate_request_id: true
                preserve_external_request_id: false
                always_set_request_id_in_response: true
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: KEEP_UNCHANGED
                stream_idle_timeout: {{ .Values.envoy.streamIdleTimeout }}
                request_timeout: 120s
                request_headers_timeout: 10s
                common_http_protocol_options:
                  idle_timeout: 3600s
                  headers_with_underscores_action: DROP_HEADER
                http2_protocol_options:
                  max_concurrent_streams: 100
                  initial_stream_window_size: 65536
                  initial_connection_window_size: 1048576
                access_log:
                  - name: envoy.access_loggers.stdout
                    typed_config:
                      '@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
                      log_format:
                        formatters:
                          - name: envoy.formatter.req_without_query
                            typed_config:
                              '@type': type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery
                        json_format:
                          start_time: '%START_TIME%'
                          request_id: '%REQ(X-REQUEST-ID)%'
                          method: '%REQ(:METHOD)%'
                          path: '%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%'
                          protocol: '%PROTOCOL%'
                          status: '%RESPONSE_CODE%'
                          response_flags: '%RESPONSE_FLAGS%'
                          response_code_details: '%RESPONSE_CODE_DETAILS%'
                          bytes_received: '%BYTES_RECEIVED%'
                          bytes_sent: '%BYTES_SENT%'
                          duration_ms: '%DURATION%'
                          upstream_service_time_ms: '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%'
                          key_id: '%REQ(X-TOLLGATE-KEY)%'
                          model: '%REQ(X-TOLLGATE-MODEL)%'
                          deployment: '%REQ(X-TOLLGATE-DEPLOYMENT)%'
                          client: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'
                          user_agent: '%REQ(USER-AGENT)%'
                local_reply_config:
                  mappers:
                    - filter:
                        response_flag_filter:
                          flags: [UF, UH, URX, UC, UR, LR, UO, UPE, OM]
                      status_code: 503
                      body_format_override:
                        text_format_source:
                          inline_string: '{"error":{"message":"tollgate is not reachable right now: retry shortly.","type":"service_unavailable","param":null,"code":"gateway_unavailable"}}'
                        content_type: application/json
                    - filter:
                        response_flag_filter:
                          flags: [UT, SI]
                      status_code: 504
                      body_format_override:
                        text_format_source:
                          inline_string: '{"error":{"message":"tollgate did not answer in time: retry, or ask for fewer tokens.","type":"timeout","param":null,"code":"upstream_timeout"}}'
                        content_type: application/json
                    - filter:
                        status_code_filter:
                          comparison:
                            op: EQ
                            value: { default_value: 413, runtime_key: tollgate.local_reply.payload_too_large }
                      body_format_override:
                        text_format_source:
                          inline_string: '{"error":{"message":"The request body is too large: send a smaller request.","type":"invalid_request_error","param":null,"code":"request_too_large"}}'
                        content_type: application/json
                    # A failed Check: status_on_error (500, no denial's status) as a 503 in OpenAI's shape.
                    - filter:
                        and_filter:
                          filters:
                            - response_flag_filter:
                                flags: [UAEX]
                            - status_code_filter:
                                comparison:
                                  op: EQ
                                  value: { default_value: 500, runtime_key: tollgate.local_reply.authz_error }
                      status_code: 503
                      body_format_override:
                        text_format_source:
                          inline_string: '{"error":{"message":"tollgate cannot authorize requests right now: retry shortly.","type":"service_unavailable","param":null,"code":"authz_unavailable"}}'
                        content_type: application/json
                http_filters:
                  # Client-sent x-tollgate-* never reach ext_authz or the gateway.
                  - name: envoy.filters.http.header_mutation
                    typed_config:
                      '@type': type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
                      mutations:
                        request_mutations:
                          - remove: x-tollgate-key
                          - remove: x-tollgate-key-alias
                          - remove: x-tollgate-user
                          - remove: x-tollgate-team
                          - remove: x-tollgate-model
                          - remove: x-tollgate-deployment
                          - remove: x-tollgate-request-id
                          - remove: x-tollgate-context
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      '@type': type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service:
                        envoy_grpc:
                          cluster_name: tollgate_authz
                        timeout: {{ .Values.envoy.authzTimeout }}
                      with_request_body:
                        max_request_bytes: {{ $maxRequestBytes }}
                        allow_partial_message: false
                        pack_as_bytes: true
                      failure_mode_allow: false
                      status_on_error:
                        code: InternalServerError
                      clear_route_cache: true
                  - name: envoy.filters.http.router
                    typed_config:
                      '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: tollgate
                  virtual_hosts:
                    - name: tollgate
                      domains: ['*']
                      routes:
                        - match: { prefix: / }
                          route:
                            cluster: tollgate_gateway
                            timeout: 0s
                            idle_timeout: {{ .Values.envoy.streamIdleTimeout }}
          {{- if .Values.envoy.tls.secretName }}
          # envoy.tls.secretName: TLS from clients, TLS 1.2 at least; ALPN offers HTTP/2 (codec_type AUTO). The
          # files are read at start: restart the pods after the certificate is renewed.
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                tls_params:
                  tls_minimum_protocol_version: TLSv1_2
                alpn_protocols: [h2, http/1.1]
                tls_certificates:
                  - certificate_chain: { filename: /etc/envoy-tls/tls.crt }
                    private_key: { filename: /etc/envoy-tls/tls.key }
          {{- end }}

    - name: envoy_stats
      address:
        socket_address: { address: 0.0.0.0, port_value: 9902 }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: envoy_stats
                codec_type: HTTP1
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: envoy_stats
                  virtual_hosts:
                    - name: envoy_stats
                      domains: ['*']
                      routes:
                        - match:
                            path: /ready
                            headers: [{ name: ':method', string_match: { exact: GET } }]
                          route: { cluster: envoy_admin }
                        - match:
                            path: /stats/prometheus
                            headers: [{ name: ':method', string_match: { exact: GET } }]
                          route: { cluster: envoy_admin }

  clusters:
    - name: tollgate_authz
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      load_assignment:
        cluster_name: tollgate_authz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: 9001 }
      health_checks:
        - timeout: 1s
          interval: 5s
          unhealthy_threshold: 2
          healthy_threshold: 1
          grpc_health_check:
            service_name: envoy.service.auth.v3.Authorization

    - name: tollgate_gateway
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          common_http_protocol_options:
            # Below the gateway's keep-alive timeout (65 s).
            idle_timeout: 60s
          explicit_http_config:
            http_protocol_options: {}
      # max_requests caps concurrent requests (an overflow is UO, a 503). Envoy has no timer on its pending
      # queue, and a request queued behind busy connections would wait for a stream to end, past the 30 s
      # x-tollgate-context that authz signed for it: so max_connections leaves room for a new connection per
      # pending request, which then waits only for its connect (connect_timeout) and is answered or refused.
      circuit_breakers:
        thresholds:
          - priority: DEFAULT
            max_connections: 1280
            max_pending_requests: 128
            max_requests: 1024
      load_assignment:
        cluster_name: tollgate_gateway
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: 4000 }
      health_checks:
        - timeout: 1s
          interval: 5s
          unhealthy_threshold: 2
          healthy_threshold: 1
          http_health_check:
            path: /health/readiness

    - name: envoy_admin
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: envoy_admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: 9901 }
{{- end -}}
