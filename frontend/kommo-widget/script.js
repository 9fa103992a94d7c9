/*
 * pipepay for Kommo.
 *
 * Everything is configured on pipepay (OAuth and the Kommo API), so the widget only
 * explains that in its settings window and links to pipepay's claim page.
 *
 * Kommo's listing rules, kept here on purpose: dependencies only through define([...]);
 * no eval, no synchronous XHR, no API calls at all; nothing is written to the global
 * APP; every node and style lives under one root element with the pipepay-widget class.
 */
define(['jquery'], function ($) {
  'use strict';

  // Placeholders: `pipepay kommo widget pack` writes the deployment's PIPEPAY_PUBLIC_URL
  // and --support-email over them (and over "support" in manifest.json) when it packs.
  var PIPEPAY_PUBLIC_URL = 'https://pipepay.example';
  var SUPPORT_EMAIL = 'support@pipepay.example';

  var CLAIM_URL = PIPEPAY_PUBLIC_URL + '/kommo/claim';
  var HELP_URL = PIPEPAY_PUBLIC_URL + '/help';
  var ROOT = 'pipepay-widget';

  var CustomWidget = function () {
    var self = this;
    var $root = null;

    function text(key) {
      var section = self.i18n('pipepay');
      return section && typeof section[key] === 'string' ? section[key] : '';
    }

    function link(part, href, label, newTab) {
      var attributes = { 'class': ROOT + '__' + part, href: href, text: label };
      if (newTab) {
        attributes.target = '_blank';
        attributes.rel = 'noopener noreferrer';
      }
      return $('<a>', attributes);
    }

    // Kommo serves the widget's own files under settings.path. The stylesheet goes inside
    // the root rather than into <head>, so it leaves with the root and touches nothing else.
    function stylesheet() {
      var settings = self.get_settings() || {};
      if (!settings.path) {
        return null;
      }
      var version = encodeURIComponent(String(settings.version || ''));
      return $('<link>', { rel: 'stylesheet', type: 'text/css', href: settings.path + '/style.css?v=' + version });
    }

    function build() {
      var $node = $('<div>', { 'class': ROOT });
      var $css = stylesheet();
      if ($css) {
        $node.append($css);
      }
      $node.append(
        $('<h3>', { 'class': ROOT + '__title', text: text('title') }),
        $('<p>', { 'class': ROOT + '__text', text: text('intro') }),
        $('<p>', { 'class': ROOT + '__text', text: text('setup') }),
        $('<p>', { 'class': ROOT + '__action' }).append(link('open', CLAIM_URL, text('open'), true)),
        $('<p>', { 'class': ROOT + '__help' }).append(
          document.createTextNode(text('help') + ' '),
          link('link', HELP_URL, text('help_link'), true),
          document.createTextNode(' \u00b7 '),
          link('link', 'mailto:' + SUPPORT_EMAIL, SUPPORT_EMAIL, false)
        )
      );
      return $node;
    }

    // The settings window markup is Kommo's; fall back outwards if a class is renamed.
    function container($modal) {
      var $block = $modal.find('.widget_settings_block').first();
      if ($block.length) {
        return $block;
      }
      var $body = $modal.find('.modal-body').first();
      return $body.length ? $body : $modal;
    }

    function remove() {
      if ($root) {
        $root.remove();
        $root = null;
      }
    }

    this.callbacks = {
      // Kommo skips init and bind_actions unless render returns true.
      render: function () {
        return true;
      },
      init: function () {
        return true;
      },
      bind_actions: function () {
        return true;
      },
      settings: function ($modal) {
        remove();
        $root = build();
        container($($modal)).append($root);
        return true;
      },
      // Nothing is saved in Kommo; returning true lets Kommo mark the widget as set up.
      onSave: function () {
        return true;
      },
      destroy: function () {
        remove();
        return true;
      }
    };
    return this;
  };

  return CustomWidget;
});
